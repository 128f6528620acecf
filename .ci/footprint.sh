#!/usr/bin/env bash
# Footprint budgets (figures, not timings), run by .ci/run after the packaging check:
#  - the static musl release binary stays within its budget (5.75 MiB; the goal is 5 MiB);
#  - a 2-minute run of the real daemon against the 100-table case stays under its peak-RSS
#    budget (measured figure + 50 %). Adds about 2.5 minutes.
#  - FOOTPRINT_LARGE=1 also runs the 10,000-table case (5,000 statements of ~1.9 kB) at the same
#    time: its setup alone takes 1-2 minutes, so it is left out of the 40-minute CI by default.
# A regression fails with the figure and the budget in the message.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=x86_64-unknown-linux-musl
BIN=$ROOT/target/$TARGET/release/dbtune-agent
# With all nine providers, the S3 audit trail and the TOML reader the binary measured
# 5,547,192 bytes (5.29 MiB): over the 5 MiB goal, so the budget is that figure plus ~9 % to
# catch regressions until the size work lands.
MAX_BINARY=$((5888 * 1024))
# Peak RSS measured with the static musl build, 2-minute runs: 100 tables 5.5 MiB (+50 % = 8.3);
# 10,000 tables 46.6 MiB (+50 % = 70; the goal of 24 MiB is not reached yet: the bootstrap
# pass's DDL dump still reads its catalog queries whole).
BUDGET_SMALL_MIB=${BUDGET_SMALL_MIB:-8.3}
BUDGET_LARGE_MIB=${BUDGET_LARGE_MIB:-70}

if [[ ! -x $BIN ]]; then
  cargo build --release --target "$TARGET" --quiet
fi
size=$(stat -c %s "$BIN")
if (( size > MAX_BINARY )); then
  echo "footprint: FAIL static musl binary is $size bytes, budget $MAX_BINARY bytes (5.75 MiB)"
  exit 1
fi
echo "footprint: static musl binary $size bytes (budget $MAX_BINARY): ok"
if [[ -f .cache/pg-versions.env ]]; then
  # shellcheck disable=SC1091
  source .cache/pg-versions.env
fi
start=$(date +%s)
large=()
if [[ ${FOOTPRINT_LARGE:-0} == 1 ]]; then
  large=(--budget-large "$BUDGET_LARGE_MIB")
fi
cargo test --quiet --bench scale -- --ci --agent "$BIN" --minutes 2 \
  --budget-small "$BUDGET_SMALL_MIB" "${large[@]}"
echo "footprint: RSS budgets checked in $(( $(date +%s) - start )) s"
