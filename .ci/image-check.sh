#!/usr/bin/env bash
# Builds the FROM-scratch image (packaging/Dockerfile) with a real Docker Engine and runs it the
# way an operator would: as uid 10001, read-only root filesystem, state on a tmpfs, host
# network, against a real PostgreSQL 15 on loopback in dry-run mode; passes when the image's
# HEALTHCHECK turns healthy and the payloads appear. Prints the image size.
# Needs root, dockerd (.ci/setup-docker.sh) and the static binary (built if missing).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bash .ci/setup-docker.sh >/dev/null
# shellcheck disable=SC1091
source .cache/docker.env
TARGET=x86_64-unknown-linux-musl
BIN=target/$TARGET/release/dbtune-agent
[[ -x $BIN ]] || cargo build --release --locked --target "$TARGET"
WORK=$(mktemp -d /tmp/dbtune-image.XXXXXX)
chmod 755 "$WORK"
SOCK=$WORK/docker.sock
export DOCKER_HOST=unix://$SOCK
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "  ok   $*"; }
bad() { failed=$((failed + 1)); echo "  FAIL $*"; }
expect_eq() { if [[ "$2" == "$3" ]]; then ok "$1 ($2)"; else bad "$1: got '$2', expected '$3'"; fi; }

cleanup() {
    docker rm -f dbtune-agent-ci >/dev/null 2>&1 || true
    [[ -n ${PGDATA_DIR:-} ]] && runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$PGDATA_DIR" -m immediate stop >/dev/null 2>&1 || true
    [[ -f $WORK/dockerd.pid ]] && kill "$(cat "$WORK/dockerd.pid")" 2>/dev/null || true
    sleep 1
    umount "$WORK/exec/netns/default" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

echo "== container image (real Docker Engine)"
"$DBTUNE_TEST_DOCKERD" --iptables=false --ip-masq=false --bridge=none --storage-driver=vfs \
    --data-root "$ROOT/.cache/docker-image" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
    -H "$DOCKER_HOST" >"$WORK/dockerd.log" 2>&1 </dev/null &
for _ in $(seq 1 150); do docker version >/dev/null 2>&1 && break; sleep 0.2; done
docker version --format '  engine {{.Server.Version}}, API {{.Server.APIVersion}}'

python3 packaging/build-image-rootfs.py "$BIN" "$WORK/context" >/dev/null
docker rmi -f dbtune-agent:ci >/dev/null 2>&1 || true
if docker build -q -f packaging/Dockerfile -t dbtune-agent:ci "$WORK/context" >"$WORK/build.log" 2>&1; then
    ok "docker build of packaging/Dockerfile"
else
    bad "docker build of packaging/Dockerfile"; sed 's/^/       | /' "$WORK/build.log"
fi
expect_eq "image user" "$(docker image inspect --format '{{.Config.User}}' dbtune-agent:ci)" "10001:10001"
expect_eq "image healthcheck" "$(docker image inspect --format '{{json .Config.Healthcheck.Test}}' dbtune-agent:ci)" '["CMD","/usr/bin/dbtune-agent","--health"]'
SIZE=$(docker image inspect --format '{{.Size}}' dbtune-agent:ci)

# A real PostgreSQL 15 on a free loopback port.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$WORK/pgrun" && chown postgres "$WORK/pgrun"
PGDATA_DIR=$WORK/pgrun/data
runuser -u postgres -- /usr/lib/postgresql/15/bin/initdb -D "$PGDATA_DIR" -U postgres -A trust --no-sync >/dev/null
runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D "$PGDATA_DIR" -w -l "$WORK/pgrun/pg.log" \
    -o "-p $PORT -k $WORK/pgrun -c listen_addresses=127.0.0.1 -c shared_preload_libraries=pg_stat_statements" start >/dev/null
psql -qX -h 127.0.0.1 -p "$PORT" -U postgres -c 'CREATE EXTENSION pg_stat_statements' postgres

docker run -d --name dbtune-agent-ci --network host --read-only \
    --tmpfs /var/lib/dbtune-agent:uid=10001,gid=10001,mode=0750 \
    --tmpfs /run/dbtune-agent:uid=10001,gid=10001,mode=0750 \
    --health-interval 2s --health-start-period 1s \
    -e DBT_POSTGRESQL_CONNECTION_URL="postgres://postgres@127.0.0.1:$PORT/postgres?sslmode=disable" \
    dbtune-agent:ci --local --dry-run >/dev/null
status=starting
for _ in $(seq 1 60); do
    status=$(docker inspect --format '{{.State.Health.Status}}' dbtune-agent-ci)
    [[ $status == healthy || $status == unhealthy ]] && break
    sleep 1
done
expect_eq "HEALTHCHECK of the running container" "$status" "healthy"
expect_eq "runs as uid 10001" "$(docker inspect --format '{{.Config.User}}' dbtune-agent-ci)" "10001:10001"
expect_eq "read-only root filesystem" "$(docker inspect --format '{{.HostConfig.ReadonlyRootfs}}' dbtune-agent-ci)" "true"
HEALTH=$(docker exec dbtune-agent-ci /usr/bin/dbtune-agent --health 2>&1 || true)
if grep -q '^ok: .*(/run/dbtune-agent/alive-' <<<"$HEALTH"; then
    ok "--health reads the liveness file in the runtime directory"
else
    bad "--health: $HEALTH"
fi
LOGS=$(docker logs dbtune-agent-ci 2>&1)
if grep -q '"endpoint"' <<<"$LOGS" && grep -q 'system_info' <<<"$LOGS"; then
    ok "dry-run payloads written (system info among them)"
else
    bad "dry-run payloads missing"; head -20 <<<"$LOGS" | sed 's/^/       | /'
fi
printf '  %-34s %10d bytes\n' "image size (docker image inspect)" "$SIZE"
echo
echo "image-check: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
