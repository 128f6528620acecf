#!/usr/bin/env bash
# The packaged agent under a real systemd: boots a copy of the Debian 12 root with
# systemd-nspawn (systemd as PID 1, host network), installs the .deb there, and runs the unit
# against a throwaway PostgreSQL and a platform stand-in on the host's loopback. Checks
# READY (systemctl start returns), watchdog pings, the sandbox (user, NoNewPrivs, seccomp, no
# capabilities), reload, the polkit-authorised PostgreSQL restart from inside the unit's
# sandbox (and a refused one), a watchdog kill + restart of a frozen agent, and a clean stop.
#
# usage: packaging-systemd-e2e.sh DEB CHROOT_TEMPLATE
# Prints "ok"/"FAIL" lines and a final "systemd-e2e: N passed, N failed"; exits 1 on failure.
set -euo pipefail

DEB=$(realpath "$1")
TEMPLATE=$2
PGBIN=${DBTUNE_TEST_PG_BINDIR:-/usr/lib/postgresql/15/bin}
WORK=$(mktemp -d /tmp/dbtune-systemd.XXXXXX)
chmod 755 "$WORK"
ROOT=$WORK/root
NSPAWN_PID=
STANDIN_PID=
PG_STARTED=

cleanup() {
    [[ -n $NSPAWN_PID ]] && kill "$NSPAWN_PID" 2>/dev/null && wait "$NSPAWN_PID" 2>/dev/null
    [[ -n $STANDIN_PID ]] && kill "$STANDIN_PID" 2>/dev/null
    [[ -n $PG_STARTED ]] && su postgres -s /bin/sh -c "$PGBIN/pg_ctl -D $WORK/pg/data stop -m immediate" >/dev/null 2>&1
    rm -rf "$WORK"
}
trap cleanup EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "  ok   $*"; }
bad() { failed=$((failed + 1)); echo "  FAIL $*"; }
check() {
    local what=$1
    shift
    if "$@" >"$WORK/check.out" 2>&1; then ok "$what"; else
        bad "$what"
        sed 's/^/       | /' "$WORK/check.out" | head -20
    fi
}
expect_eq() {
    if [[ "$2" == "$3" ]]; then ok "$1 ($2)"; else bad "$1: got '$2', expected '$3'"; fi
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# PostgreSQL on the host's loopback (the container shares the network namespace).
PGPORT=$(free_port)
mkdir -p "$WORK/pg"
chown postgres "$WORK/pg"
su postgres -s /bin/sh -c "$PGBIN/initdb -D $WORK/pg/data -A trust -U postgres" >/dev/null
echo "shared_preload_libraries = 'pg_stat_statements'" >>"$WORK/pg/data/postgresql.conf"
su postgres -s /bin/sh -c "$PGBIN/pg_ctl -D $WORK/pg/data -o '-p $PGPORT -k $WORK/pg -c listen_addresses=127.0.0.1' -l $WORK/pg/log -w start" >/dev/null
PG_STARTED=1
"$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "CREATE EXTENSION pg_stat_statements" postgres

# Platform stand-in: records request paths; no recommendation (empty list).
APIPORT=$(free_port)
python3 - "$APIPORT" "$WORK/requests.log" <<'PY' &
import http.server, sys
port, log = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def handle_one(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        with open(log, "a") as f:
            f.write(f"{self.command} {self.path}\n")
        body = b"[]" if self.command == "GET" else b""
        self.send_response(200 if body else 204)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = do_PUT = handle_one
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
PY
STANDIN_PID=$!

# The container root: the package, a configuration, a stand-in postgresql.service (and
# another unit the agent must not be able to restart), the polkit rule activated.
cp -a "$TEMPLATE" "$ROOT"
cp "$DEB" "$ROOT/tmp/pkg.deb"
chroot "$ROOT" dpkg -i /tmp/pkg.deb >/dev/null
cat >"$ROOT/etc/dbtune/dbtune.yaml" <<YAML
postgresql:
  connection_url: "postgres://postgres@127.0.0.1:$PGPORT/postgres?sslmode=disable"
  service_name: postgresql
dbtune:
  server_url: "http://127.0.0.1:$APIPORT"
  api_key: "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
  database_id: "6ba7b811-9dad-11d1-80b4-00c04fd430c8"
YAML
for u in postgresql other; do
    printf '[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n' \
        >"$ROOT/etc/systemd/system/$u.service"
done
cp "$ROOT/usr/share/dbtune-agent/polkit/50-dbtune-agent.rules" "$ROOT/etc/polkit-1/rules.d/"
# Probes that run systemctl as the agent would: the agent's own unit (same user and sandbox)
# with only the command replaced.
for target in postgresql other; do
    cp "$ROOT/usr/lib/systemd/system/dbtune-agent.service" "$ROOT/etc/systemd/system/restart-$target-probe.service"
    mkdir -p "$ROOT/etc/systemd/system/restart-$target-probe.service.d"
    printf '[Service]\nType=oneshot\nExecStart=\nExecStart=/usr/bin/systemctl restart %s.service\nExecReload=\nWatchdogSec=0\nRestart=no\n' \
        "$target" >"$ROOT/etc/systemd/system/restart-$target-probe.service.d/probe.conf"
done
echo dbtune-e2e >"$ROOT/etc/hostname"

systemd-nspawn -q -b -D "$ROOT" --register=no --keep-unit --console=pipe >"$WORK/console.log" 2>&1 &
NSPAWN_PID=$!
LEADER=
for _ in $(seq 1 100); do
    # The container's init is nspawn's child.
    LEADER=$(pgrep -P "$NSPAWN_PID" -x systemd || true)
    [[ -n $LEADER ]] && break
    sleep 0.2
done
if [[ -z $LEADER ]]; then
    echo "  FAIL the container did not boot"
    cat "$WORK/console.log"
    exit 1
fi
ct() { nsenter -t "$LEADER" -a "$@"; }
prop() { ct systemctl show -P "$2" "$1"; }
state=$(timeout 90 nsenter -t "$LEADER" -a systemctl is-system-running --wait 2>/dev/null || true)
echo "  container booted (systemd PID $LEADER, state $state)"

echo "  -- start (Type=notify: returns once the agent sent READY=1)"
check "systemctl start dbtune-agent" timeout 150 nsenter -t "$LEADER" -a systemctl start dbtune-agent.service
expect_eq "ActiveState/SubState" "$(prop dbtune-agent ActiveState)/$(prop dbtune-agent SubState)" "active/running"
expect_eq "Type" "$(prop dbtune-agent Type)" "notify"
expect_eq "WatchdogUSec" "$(prop dbtune-agent WatchdogUSec)" "1min"
expect_eq "MemoryMax" "$(prop dbtune-agent MemoryMax)" "67108864"
PID=$(prop dbtune-agent MainPID)
status=$(ct cat "/proc/$PID/status")
uid=$(chroot "$ROOT" id -u dbtune)
expect_eq "runs as user dbtune" "$(awk '/^Uid:/ {print $2}' <<<"$status")" "$uid"
expect_eq "NoNewPrivs" "$(awk '/^NoNewPrivs:/ {print $2}' <<<"$status")" "1"
expect_eq "seccomp filter mode" "$(awk '/^Seccomp:/ {print $2}' <<<"$status")" "2"
expect_eq "effective capabilities" "$(awk '/^CapEff:/ {print $2}' <<<"$status")" "0000000000000000"
check "journal has the agent's start line" bash -c "nsenter -t $LEADER -a journalctl -u dbtune-agent --no-pager | grep -q 'dbtune-agent .* starting'"

echo "  -- watchdog pings and traffic"
w1=$(prop dbtune-agent WatchdogTimestampMonotonic)
sleep 35
w2=$(prop dbtune-agent WatchdogTimestampMonotonic)
check "systemd received WATCHDOG=1 (last ping moved: $w1 -> $w2)" test "$w2" -gt "$w1"
check "platform stand-in got heartbeat and metrics from inside the sandbox" \
    bash -c "grep -q 'POST /api/v1/agent/heartbeat' '$WORK/requests.log' && grep -q 'POST /api/v1/agent/metrics' '$WORK/requests.log'"
if ct /usr/bin/dbtune-agent --help 2>&1 | grep -q -- --health; then
    check "dbtune-agent --health (heartbeat in /var/lib/dbtune-agent)" ct runuser -u dbtune -- /usr/bin/dbtune-agent --health
fi

echo "  -- reload (SIGHUP re-reads the configuration)"
check "systemctl reload dbtune-agent" timeout 30 nsenter -t "$LEADER" -a systemctl reload dbtune-agent.service
sleep 2
check "journal: configuration reloaded" bash -c "nsenter -t $LEADER -a journalctl -u dbtune-agent --no-pager | grep -q 'configuration reloaded'"
expect_eq "same process after reload" "$(prop dbtune-agent MainPID)" "$PID"

echo "  -- restarting PostgreSQL from the agent's sandbox (polkit rule)"
before=$(prop postgresql InvocationID)
check "user dbtune, agent sandbox: systemctl restart postgresql.service allowed" \
    timeout 60 nsenter -t "$LEADER" -a systemctl start restart-postgresql-probe.service
after=$(prop postgresql InvocationID)
check "postgresql.service really restarted (new invocation)" test "$before" != "$after"
check "user dbtune, agent sandbox: systemctl restart other.service refused" \
    bash -c "! timeout 60 nsenter -t $LEADER -a systemctl start restart-other-probe.service"
check "refusal came from polkit" bash -c "nsenter -t $LEADER -a journalctl -u restart-other-probe --no-pager | grep -Eiq 'access denied|interactive authentication required'"
# Without the rule the same restart is refused: the rule is what grants it.
rm "$ROOT/etc/polkit-1/rules.d/50-dbtune-agent.rules"
sleep 2
check "without the polkit rule the PostgreSQL restart is refused" \
    bash -c "! timeout 60 nsenter -t $LEADER -a systemctl start restart-postgresql-probe.service"

echo "  -- a frozen agent is killed by the watchdog and restarted"
ct kill -STOP "$PID"
restarted=
for _ in $(seq 1 90); do
    sleep 2
    if [[ $(prop dbtune-agent NRestarts) -ge 1 && $(prop dbtune-agent ActiveState) == active && $(prop dbtune-agent SubState) == running ]]; then
        restarted=1
        break
    fi
done
check "restarted after the watchdog timeout (NRestarts=$(prop dbtune-agent NRestarts))" test -n "$restarted"
check "journal: watchdog timeout" bash -c "nsenter -t $LEADER -a journalctl --no-pager | grep -qi 'watchdog timeout'"
check "new main process" test "$(prop dbtune-agent MainPID)" != "$PID"

echo "  -- stop"
t0=$(date +%s)
check "systemctl stop dbtune-agent" timeout 40 nsenter -t "$LEADER" -a systemctl stop dbtune-agent.service
check "stopped within 15 s" test $(($(date +%s) - t0)) -le 15
expect_eq "stop result" "$(prop dbtune-agent Result)" "success"
echo "  memory (MemoryPeak/MemoryCurrent): $(prop dbtune-agent MemoryPeak 2>/dev/null || true) $(prop dbtune-agent MemoryCurrent)"

echo "systemd-e2e: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
