#!/usr/bin/env bash
# The test command: installs what a fresh machine lacks (idempotent), then runs every test.
#   tests/run.sh [cargo test args...]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
if [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then
  echo "installing PostgreSQL 15 server binaries" >&2
  apt-get update -qq && apt-get install -y -qq postgresql-15 postgresql-contrib >/dev/null
fi
# Per-area setup scripts (PostgreSQL versions, moto, packaging tools) install into .cache/ and
# write the variables the tests need into .cache/<area>.env.
mkdir -p .cache
# (Packaging tools are set up by .ci/packaging-check.sh itself; tests do not need them.)
# Every .ci/setup-*.sh except packaging (dockerd, etcd/Patroni, moto, … each own one script).
for s in .ci/setup-*.sh; do
  [ -e "$s" ] || continue
  [ "$s" = .ci/setup-packaging.sh ] && continue
  echo "== $s" >&2
  bash "$s"
done
for e in .cache/*.env; do
  [ -e "$e" ] || continue
  set -a; . "$e"; set +a
done
# Integration tests start PostgreSQL clusters and the agent binary; two at a time fits 2 cores.
exec cargo test -- --test-threads="${TEST_THREADS:-2}" "$@"
