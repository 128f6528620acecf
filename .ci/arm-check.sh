#!/usr/bin/env bash
# ARM as a tested platform: cross-builds the static aarch64 and armv7 binaries and their
# packages with packaging/build-release.sh (the shipped build, nothing lighter), inspects them
# against the x86_64 ones, builds the FROM-scratch image per architecture, then runs each ARM
# binary under Debian's qemu-user-static for real: --version, --check, --dry-run --once and
# the x86_64 end-to-end contract checks against a real PostgreSQL 15 and the platform stand-in
# on loopback (tests/agent_e2e.rs, tests/cli.rs and tests/emulated_agent.rs with
# DBTUNE_TEST_AGENT), installs each .deb into a throwaway Debian root of its architecture
# (debootstrap --foreign, second stage under qemu via binfmt_misc), and prints the binary sizes
# and the RSS/CPU of a 2-minute --dry-run run per target (emulated: relative figures only).
#
# Run after .ci/packaging-check.sh (it compares with the amd64 .deb/.rpm that script builds,
# when present). Runs .ci/setup-packaging.sh first (idempotent). Run as root.
# DBTUNE_ARM_FIGURE_SECONDS (default 120) sets the length of the figures run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bash .ci/setup-packaging.sh
# shellcheck disable=SC1091
source .cache/packaging.env
OUT=$ROOT/target/packaging
PGBIN=${DBTUNE_TEST_PG_BINDIR:-/usr/lib/postgresql/15/bin}
FIGURE_SECONDS=${DBTUNE_ARM_FIGURE_SECONDS:-120}
WORK=$(mktemp -d /tmp/dbtune-arm.XXXXXX)
chmod 755 "$WORK"
PG_STARTED=
FIGURE_PID=
ROOT_PIDS=()
cleanup() {
    [[ -n $FIGURE_PID ]] && kill "$FIGURE_PID" 2>/dev/null
    for p in "${ROOT_PIDS[@]}"; do kill "$p" 2>/dev/null; done
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
        sed 's/^/       | /' "$WORK/check.out" | tail -30
    fi
}
expect_eq() {
    if [[ "$2" == "$3" ]]; then ok "$1 ($2)"; else bad "$1: got '$2', expected '$3'"; fi
}
section() { echo; echo "== $*"; }
declare -A took
phase_start=$(date +%s)
phase_end() { took[$1]=$(($(date +%s) - phase_start)); phase_start=$(date +%s); }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
COMMIT=$(git rev-parse --short=12 HEAD)
VERSION=$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json,sys; print([p for p in json.load(sys.stdin)["packages"] if p["name"]=="dbtune-agent"][0]["version"])')
TARGETS=(aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf)
declare -A QEMU=([aarch64-unknown-linux-musl]=qemu-aarch64-static [armv7-unknown-linux-musleabihf]=qemu-arm-static)
declare -A DEBARCH=([aarch64-unknown-linux-musl]=arm64 [armv7-unknown-linux-musleabihf]=armhf)
declare -A RPMARCH=([aarch64-unknown-linux-musl]=aarch64 [armv7-unknown-linux-musleabihf]=armv7hl)
declare -A OCIARCH=([aarch64-unknown-linux-musl]=arm64/v8 [armv7-unknown-linux-musleabihf]=arm/v7)
declare -A MACHINE=([aarch64-unknown-linux-musl]=AArch64 [armv7-unknown-linux-musleabihf]=ARM)
declare -A RUSTARCH=([aarch64-unknown-linux-musl]=aarch64-linux [armv7-unknown-linux-musleabihf]=arm-linux)
bin() { echo "target/$1/release/dbtune-agent"; }

# binfmt_misc lets the kernel hand ARM executables to qemu (fix-binary: the interpreter is
# opened at registration, so it works inside chroots): needed for the foreign Debian roots and
# for running the binary inside the image root.
BINFMT=0
if [[ -d /proc/sys/fs/binfmt_misc ]]; then
    [[ -e /proc/sys/fs/binfmt_misc/register ]] ||
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
    if [[ -e /proc/sys/fs/binfmt_misc/register ]]; then
        update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
        update-binfmts --enable qemu-arm >/dev/null 2>&1 || true
        grep -q enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null &&
            grep -q enabled /proc/sys/fs/binfmt_misc/qemu-arm 2>/dev/null && BINFMT=1
    fi
fi
# debootstrap --foreign unpacks the arm64/armhf base; its second stage runs the root's own
# (ARM) dpkg under qemu through binfmt_misc. Cached next to the amd64 root.
foreign_root() {
    local arch=$1 dir mirror
    dir=$(dirname "$DBTUNE_PACKAGING_CHROOT")/bookworm-$arch-minbase
    # A finished second stage removes /debootstrap.
    if [[ ! -x $dir/usr/sbin/useradd || -e $dir/debootstrap ]]; then
        mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1 || true)
        [[ -n $mirror ]] || mirror=$(awk '$1 == "deb" && $3 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
        rm -rf "$dir.tmp"
        mkdir -p "$(dirname "$dir")"
        debootstrap --foreign --arch="$arch" --variant=minbase --include=passwd bookworm "$dir.tmp" "$mirror" >/dev/null
        chroot "$dir.tmp" /debootstrap/debootstrap --second-stage >/dev/null
        chroot "$dir.tmp" apt-get clean
        rm -rf "$dir"
        mv "$dir.tmp" "$dir"
    fi
    echo "$dir"
}
if ((BINFMT)); then
    # Prepared in the background: the download and the emulated second stage overlap the
    # builds (whose LTO link leaves a core idle).
    for a in arm64 armhf; do
        (foreign_root "$a" >"$WORK/root-$a.path" 2>"$WORK/root-$a.err") &
        ROOT_PIDS+=($!)
    done
fi

section "cross builds (packaging/build-release.sh ${TARGETS[*]})"
TIMEFORMAT='  build: %R s wall, %U s user, %S s sys (this process tree)'
time packaging/build-release.sh "${TARGETS[@]}"
phase_end build

section "binaries"
for t in "${TARGETS[@]}"; do
    b=$(bin "$t")
    echo "  $t"
    check "$t: no program interpreter (static)" bash -c "! readelf -lW '$b' | grep -q INTERP"
    check "$t: no shared-library dependencies" bash -c "! readelf -dW '$b' | grep -q NEEDED"
    check "$t: stripped" bash -c "! readelf -SW '$b' | grep -q '\.symtab'"
    expect_eq "$t: ELF machine" "$(readelf -hW "$b" | sed -n 's/^ *Machine: *//p')" "${MACHINE[$t]}"
    if [[ $t == armv7* ]]; then
        check "$t: hard-float EABI5" bash -c "readelf -hW '$b' | grep -q 'Version5 EABI, hard-float ABI'"
        expect_eq "$t: CPU arch attribute" "$(readelf -AW "$b" | sed -n 's/^ *Tag_CPU_arch: *//p')" "v7"
    fi
    v=$("${QEMU[$t]}" "$b" --version)
    echo "    $v"
    expect_eq "$t: --version (${QEMU[$t]})" "$(awk '{print $1, $2}' <<<"$v")" "dbtune-agent $VERSION"
    check "$t: --version embeds commit $COMMIT and ${RUSTARCH[$t]}" \
        bash -c "grep -qF 'commit: $COMMIT' <<<'$v' && grep -qF 'rust: ${RUSTARCH[$t]}' <<<'$v'"
done

section "packages (compared with the amd64 ones)"
listing() { dpkg-deb -c "$1" | awk '{print $1, $2, $6}'; }
rpm_files() { rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]' "$1" 2>/dev/null; }
AMD_DEB=$(ls "$OUT"/*_amd64.deb 2>/dev/null | head -1 || true)
AMD_RPM=$(ls "$OUT"/*.x86_64.rpm 2>/dev/null | head -1 || true)
for t in "${TARGETS[@]}"; do
    deb=$OUT/dbtune-agent_$VERSION-1_${DEBARCH[$t]}.deb
    rpm=$OUT/dbtune-agent-$VERSION-1.${RPMARCH[$t]}.rpm
    check "$t: $deb exists" test -f "$deb"
    check "$t: $rpm exists" test -f "$rpm"
    [[ -f $deb && -f $rpm ]] || continue
    expect_eq "$t: .deb Architecture" "$(dpkg-deb -f "$deb" Architecture)" "${DEBARCH[$t]}"
    expect_eq "$t: .deb Version" "$(dpkg-deb -f "$deb" Version)" "$VERSION-1"
    expect_eq "$t: .deb Depends" "$(dpkg-deb -f "$deb" Depends)" "passwd"
    expect_eq "$t: .rpm arch" "$(rpm -qp --qf '%{ARCH}' "$rpm" 2>/dev/null)" "${RPMARCH[$t]}"
    expect_eq "$t: .rpm Version-Release" "$(rpm -qp --qf '%{VERSION}-%{RELEASE}' "$rpm" 2>/dev/null)" "$VERSION-1"
    check "$t: .rpm has no shared-library requirements" bash -c "! rpm -qpR '$rpm' 2>/dev/null | grep -q '\.so'"
    mkdir -p "$WORK/pkg/$t"
    dpkg-deb -x "$deb" "$WORK/pkg/$t/root"
    check "$t: the .deb carries this target's binary" cmp "$WORK/pkg/$t/root/usr/bin/dbtune-agent" "$(bin "$t")"
    sum=$(sha256sum "$(bin "$t")" | cut -d' ' -f1)
    check "$t: the .rpm carries this target's binary (SHA-256 in the rpm header)" bash -c \
        "rpm -qp --qf '[%{FILEDIGESTS} %{FILENAMES}\n]' '$rpm' 2>/dev/null | grep -qx '$sum /usr/bin/dbtune-agent'"
    if [[ -n $AMD_DEB ]]; then
        check "$t: .deb file list, owners and modes = amd64's" diff <(listing "$AMD_DEB") <(listing "$deb")
        dpkg-deb -e "$AMD_DEB" "$WORK/pkg/amd64-control" 2>/dev/null || true
        dpkg-deb -e "$deb" "$WORK/pkg/$t/control"
        check "$t: .deb maintainer scripts and conffiles = amd64's" \
            diff -r -x control -x md5sums "$WORK/pkg/amd64-control" "$WORK/pkg/$t/control"
    else
        echo "  (no amd64 .deb in $OUT: run .ci/packaging-check.sh first to compare)"
        check "$t: .deb ships the binary, config, unit and polkit rule" bash -c "
            l=\$(dpkg-deb -c '$deb'); for f in ./usr/bin/dbtune-agent ./etc/dbtune/dbtune.yaml \
            ./usr/lib/systemd/system/dbtune-agent.service ./usr/share/dbtune-agent/polkit/50-dbtune-agent.rules; do
            grep -q \" \$f\$\" <<<\"\$l\" || { echo missing \$f; exit 1; }; done"
    fi
    if [[ -n $AMD_RPM ]]; then
        check "$t: .rpm file list, owners, modes, flags = x86_64's" diff <(rpm_files "$AMD_RPM") <(rpm_files "$rpm")
        check "$t: .rpm scriptlets = x86_64's" diff <(rpm -qp --scripts "$AMD_RPM" 2>/dev/null) <(rpm -qp --scripts "$rpm" 2>/dev/null)
    fi
done

section "FROM-scratch image per architecture (OCI layout, assembled without Docker)"
for t in "${TARGETS[@]}"; do
    arch=${OCIARCH[$t]%/*} variant=${OCIARCH[$t]#*/}
    img=$OUT/image-$arch
    rm -rf "$WORK/bundle-$arch"
    check "$t: umoci unpacks image-$arch" umoci unpack --image "$img/oci:dbtune-agent" "$WORK/bundle-$arch"
    expect_eq "$t: image platform" "$(python3 - "$img/oci" <<'PY'
import json, os, sys
oci = sys.argv[1]
idx = json.load(open(os.path.join(oci, "index.json")))["manifests"][0]
man = json.load(open(os.path.join(oci, "blobs", *idx["digest"].split(":"))))
cfg = json.load(open(os.path.join(oci, "blobs", *man["config"]["digest"].split(":"))))
p = idx["platform"]
assert (p["architecture"], p.get("variant")) == (cfg["architecture"], cfg.get("variant")), (p, cfg)
print(f'{cfg["os"]}/{cfg["architecture"]}/{cfg["variant"]}')
PY
)" "linux/$arch/$variant"
    check "$t: the image carries this target's binary" cmp "$WORK/bundle-$arch/rootfs/usr/bin/dbtune-agent" "$(bin "$t")"
done
phase_end inspect

if ((BINFMT)); then
    for t in "${TARGETS[@]}"; do
        arch=${OCIARCH[$t]%/*}
        expect_eq "$t: runs as uid 10001 inside its image root (binfmt_misc + qemu)" \
            "$(chroot --userspec=10001:10001 "$WORK/bundle-$arch/rootfs" /usr/bin/dbtune-agent --version | awk '{print $2}')" "$VERSION"
    done
else
    echo "  (binfmt_misc not available: the image root and the foreign Debian roots are not entered)"
fi

section "PostgreSQL 15 on loopback (for the figures run)"
PGPORT=$(free_port)
mkdir -p "$WORK/pg"
chown postgres "$WORK/pg"
su postgres -s /bin/sh -c "$PGBIN/initdb -D $WORK/pg/data -A trust -U postgres" >/dev/null
echo "shared_preload_libraries = 'pg_stat_statements'" >>"$WORK/pg/data/postgresql.conf"
su postgres -s /bin/sh -c "$PGBIN/pg_ctl -D $WORK/pg/data -o '-p $PGPORT -k $WORK/pg -c listen_addresses=127.0.0.1' -l $WORK/pg/log -w start" >/dev/null
PG_STARTED=1
"$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -qc "CREATE EXTENSION pg_stat_statements" postgres
echo "  port $PGPORT"

# The figures run, in the background while the emulated tests and the installs run: each
# binary (x86_64 native as the reference, each ARM one under qemu-user) with --dry-run for
# FIGURE_SECONDS, then peak RSS (VmHWM) and CPU seconds (utime+stime) of the process (qemu's
# own translator included for the emulated ones), then SIGTERM: it must exit 0.
figures() {
    local names=() pids=() i
    local x86=target/x86_64-unknown-linux-musl/release/dbtune-agent
    [[ -x $x86 ]] && names+=("x86_64 (native)|$x86")
    for t in "${TARGETS[@]}"; do names+=("$t (emulated, ${QEMU[$t]})|${QEMU[$t]} $(bin "$t")"); done
    for i in "${!names[@]}"; do
        local d=$WORK/figures/$i
        mkdir -p "$d"
        printf 'postgresql:\n  connection_url: "postgres://postgres@127.0.0.1:%s/postgres?sslmode=disable"\nstate_dir: "%s"\n' \
            "$PGPORT" "$d/state" >"$d/dbtune.yaml"
        # shellcheck disable=SC2086
        ${names[$i]#*|} --config "$d/dbtune.yaml" --local --dry-run --output "$d/out.jsonl" 2>"$d/err" &
        pids+=($!)
    done
    sleep "$FIGURE_SECONDS"
    for i in "${!names[@]}"; do
        local pid=${pids[$i]} hwm cpu st d=$WORK/figures/$i
        hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        cpu=$(python3 -c "import os,sys; f=open('/proc/$pid/stat').read().rsplit(')',1)[1].split(); print('%.2f' % ((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK')))" 2>/dev/null || echo "?")
        kill -TERM "$pid" 2>/dev/null || true
        st=0
        wait "$pid" || st=$?
        printf '%s|%s|%s|%s|%s\n' "${names[$i]%%|*}" "$hwm" "$cpu" "$st" "$(wc -l <"$d/out.jsonl" 2>/dev/null || echo 0)" >>"$WORK/figures.txt"
        grep -v '^$' "$d/err" | tail -3 | sed "s/^/    [$i] /" >>"$WORK/figures.log"
    done
}
figures &
FIGURE_PID=$!
phase_end pg

section "ARM binaries under qemu-user against the real PostgreSQL: the x86_64 contract tests"
# The end-to-end tests were built by tests/run.sh already; this only runs them with the
# emulated binary as the agent (tests/support/agent.rs honours DBTUNE_TEST_AGENT).
E2E=(every_core_endpoint_carries_the_contract_payload
    check_reports_each_check_and_fails_on_an_unreachable_database
    dry_run_once_writes_every_payload_as_json_lines_and_sends_nothing
    sigterm_exits_zero_within_ten_seconds)
CLI=(version_help_and_bad_flags sighup_rereads_the_configuration)
for t in "${TARGETS[@]}"; do
    agent="${QEMU[$t]} $ROOT/$(bin "$t")"
    check "$t: agent_e2e (${E2E[*]})" env DBTUNE_TEST_AGENT="$agent" \
        cargo test -q --test agent_e2e -- --exact --test-threads=1 "${E2E[@]}"
    check "$t: cli (${CLI[*]})" env DBTUNE_TEST_AGENT="$agent" \
        cargo test -q --test cli -- --exact --test-threads=1 "${CLI[@]}"
    check "$t: --dry-run --once vs x86_64: endpoints, payload shapes, hashes (emulated_agent)" \
        env DBTUNE_TEST_AGENT="$agent" cargo test -q --test emulated_agent -- --ignored --nocapture
    grep -E '^(native|emulated):' "$WORK/check.out" | sed 's/^/    /' || true
done
phase_end emulated

section ".deb installed into a throwaway Debian 12 root of its architecture"
owner_mode() {
    local uid gid mode
    read -r uid gid mode < <(stat -c '%u %g %a' "$1$2")
    echo "$(chroot "$1" getent passwd "$uid" | cut -d: -f1):$(chroot "$1" getent group "$gid" | cut -d: -f1) $mode"
}
if ((BINFMT)); then
    for p in "${ROOT_PIDS[@]}"; do wait "$p" || true; done
    ROOT_PIDS=()
    phase_end roots_wait
    for t in "${TARGETS[@]}"; do
        a=${DEBARCH[$t]}
        tmpl=$(cat "$WORK/root-$a.path" 2>/dev/null || true)
        if [[ -z $tmpl || ! -x $tmpl/usr/sbin/useradd ]]; then
            bad "$t: debootstrap --foreign --arch=$a"
            tail -20 "$WORK/root-$a.err" | sed 's/^/       | /'
            continue
        fi
        R=$WORK/root-$a
        cp -a "$tmpl" "$R"
        expect_eq "$t: the root is $a (dpkg --print-architecture, emulated)" "$(chroot "$R" dpkg --print-architecture)" "$a"
        cp "$OUT/dbtune-agent_$VERSION-1_$a.deb" "$R/tmp/pkg.deb"
        check "$t: dpkg -i" chroot "$R" dpkg -i /tmp/pkg.deb
        pw=$(chroot "$R" getent passwd dbtune || true)
        check "$t: system user dbtune created (nologin)" bash -c "[[ '$pw' == *nologin* ]] && (( \$(cut -d: -f3 <<<'$pw') < 1000 ))"
        expect_eq "$t: /usr/bin/dbtune-agent" "$(owner_mode "$R" /usr/bin/dbtune-agent)" "root:root 755"
        expect_eq "$t: /etc/dbtune/dbtune.yaml" "$(owner_mode "$R" /etc/dbtune/dbtune.yaml)" "root:dbtune 640"
        expect_eq "$t: /var/lib/dbtune-agent" "$(owner_mode "$R" /var/lib/dbtune-agent)" "dbtune:dbtune 750"
        expect_eq "$t: unit enabled" "$(SYSTEMD_OFFLINE=1 systemctl --root="$R" is-enabled dbtune-agent.service 2>&1)" "enabled"
        expect_eq "$t: installed binary runs in its root as dbtune" \
            "$(chroot --userspec=dbtune:dbtune "$R" /usr/bin/dbtune-agent --version | awk '{print $2}')" "$VERSION"
        check "$t: dpkg -P (purge)" chroot "$R" dpkg -P dbtune-agent
        check "$t: binary, config and state gone after purge" bash -c \
            "test ! -e '$R/usr/bin/dbtune-agent' && test ! -e '$R/etc/dbtune/dbtune.yaml' && test ! -e '$R/var/lib/dbtune-agent'"
        rm -rf "$R"
    done
else
    echo "  SKIP no binfmt_misc: contents and maintainer scripts were compared with amd64's above"
fi
phase_end install

section "figures"
wait "$FIGURE_PID" || true
FIGURE_PID=
phase_end figures_wait
size() { stat -c %s "$1"; }
printf '  %-42s %12s\n' "binary (static, stripped)" "bytes"
for t in x86_64-unknown-linux-musl "${TARGETS[@]}"; do
    [[ -f $(bin "$t") ]] && printf '  %-42s %12d\n' "$t" "$(size "$(bin "$t")")"
done
for t in "${TARGETS[@]}"; do
    printf '  %-42s %12d\n' ".deb ${DEBARCH[$t]}" "$(size "$OUT/dbtune-agent_$VERSION-1_${DEBARCH[$t]}.deb")" \
        ".rpm ${RPMARCH[$t]}" "$(size "$OUT/dbtune-agent-$VERSION-1.${RPMARCH[$t]}.rpm")" \
        "image layer ${OCIARCH[$t]} (gzipped)" "$(size "$OUT/image-${OCIARCH[$t]%/*}/rootfs.tar.gz")"
done
echo
echo "  ${FIGURE_SECONDS} s --dry-run against PostgreSQL 15 (all at once; emulated figures are relative only)"
printf '  %-58s %10s %8s %9s %5s\n' "binary" "peak RSS" "CPU s" "payloads" "exit"
while IFS='|' read -r name hwm cpu st lines; do
    printf '  %-58s %7d KiB %8s %9s %5s\n' "$name" "$hwm" "$cpu" "$lines" "$st"
    [[ $st == 0 ]] && ok "$name: exit 0 on SIGTERM after ${FIGURE_SECONDS} s" ||
        bad "$name: exit status $st on SIGTERM (log tail below)"
    [[ $lines -gt 0 ]] && ok "$name: wrote $lines payloads" || bad "$name: wrote no payloads"
done <"$WORK/figures.txt"
[[ $failed -gt 0 && -f $WORK/figures.log ]] && cat "$WORK/figures.log"

echo
echo "  time: build ${took[build]} s, inspect ${took[inspect]} s, emulated tests ${took[emulated]} s," \
    "waiting for the ARM roots ${took[roots_wait]:-0} s, installs ${took[install]} s," \
    "waiting for figures ${took[figures_wait]} s"
echo "arm-check: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
