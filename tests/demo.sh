#!/usr/bin/env bash
# Shows the agent doing its main job without a DBtune account: starts a throwaway PostgreSQL 15
# cluster on a free loopback port, runs some load, then runs
#   dbtune-agent --local --dry-run --once
# against it. Every payload the agent would send is written as one JSON line to a file
# (kept; its path is printed), and the agent's summary (per endpoint: payloads, rows, bytes;
# the system facts; "nothing was sent") is shown on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
if [ ! -x "$PGBIN/initdb" ]; then
  echo "PostgreSQL server binaries not found in $PGBIN; installing postgresql-15" >&2
  apt-get update -qq && apt-get install -y -qq postgresql-15 >/dev/null
fi
cargo build --quiet --bin dbtune-agent
dir=$(mktemp -d /tmp/dbtune-demo.XXXXXX)
run() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() { run "$PGBIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
run "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust --no-sync >/dev/null
cat >> "$dir/data/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
shared_preload_libraries = 'pg_stat_statements'
CONF
run "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w start >/dev/null
psql -q -h 127.0.0.1 -p "$port" -U postgres -c 'CREATE EXTENSION pg_stat_statements' \
  -c 'CREATE TABLE demo AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1,10000) g' \
  -c 'SELECT count(*) FROM demo WHERE v LIKE $$a%$$' >/dev/null
out=${DEMO_OUTPUT:-/tmp/dbtune-demo-payloads.jsonl}
echo "--- dbtune-agent --local --dry-run --once --output $out (PostgreSQL on 127.0.0.1:$port) ---" >&2
# Run from the throwaway directory: the checkout holds both sample files (dbtune.yaml and
# dbtune.toml), and a directory with both is refused; the demo is configured by DBT_* alone.
agent="$PWD/target/debug/dbtune-agent"
(cd "$dir" && DBT_POSTGRESQL_CONNECTION_URL="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable" \
  DBT_STATE_DIR="$dir/state" \
  "$agent" --local --dry-run --once --output "$out" "$@") 2> >(grep -v ' INFO \| DEBUG ' >&2)
wait
echo "--- $(wc -l <"$out") JSON lines in $out; the first one: ---" >&2
head -c 400 "$out" >&2; echo >&2
