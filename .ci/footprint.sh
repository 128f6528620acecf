#!/usr/bin/env bash
# Footprint budgets (figures, not timings), run by .ci/run after the packaging check:
#  - the static musl release binary is at most 5 MiB;
#  - a 2-minute run of the real daemon against the 100-table case (200 statements) stays under
#    its peak-RSS budget (measured figure + 50 %), and the 10,000-table case (5,000 statements of
#    ~1.9 kB) under 24 MiB. Both cases run at the same time (benches/scale.rs --ci).
# A regression fails with the figure and the budget in the message. Adds about 3 minutes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
TARGET=x86_64-unknown-linux-musl
BIN=$ROOT/target/$TARGET/release/dbtune-agent
MAX_BINARY=$((5 * 1024 * 1024))
# Peak RSS measured on the 100-table case: 9.0 MiB (static musl build, 2-minute run); +50 %.
BUDGET_SMALL_MIB=${BUDGET_SMALL_MIB:-13.5}
BUDGET_LARGE_MIB=${BUDGET_LARGE_MIB:-24}

if [[ ! -x $BIN ]]; then
  cargo build --release --target "$TARGET" --quiet
fi
size=$(stat -c %s "$BIN")
if (( size > MAX_BINARY )); then
  echo "footprint: FAIL static musl binary is $size bytes, budget $MAX_BINARY bytes (5 MiB)"
  exit 1
fi
echo "footprint: static musl binary $size bytes (budget $MAX_BINARY): ok"
if [[ -f .cache/pg-versions.env ]]; then
  # shellcheck disable=SC1091
  source .cache/pg-versions.env
fi
start=$(date +%s)
cargo test --quiet --bench scale -- --ci --agent "$BIN" --minutes 2 \
  --budget-small "$BUDGET_SMALL_MIB" --budget-large "$BUDGET_LARGE_MIB"
echo "footprint: RSS budgets checked in $(( $(date +%s) - start )) s"
