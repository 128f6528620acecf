#!/usr/bin/env bash
# Builds the static release binary, the .deb, the .rpm and the container image layer, inspects
# them, installs both packages into throwaway Debian roots (copies of a debootstrap'd root, so
# the host's users and files are never touched), checks the unit, the polkit rule and the
# Kubernetes manifests, and prints the sizes. Exits non-zero if any check failed.
#
# Runs .ci/setup-packaging.sh first (idempotent: installs only what is missing; it writes
# .cache/packaging.env). Run as root.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
bash .ci/setup-packaging.sh
# shellcheck disable=SC1091
source .cache/packaging.env
TARGET=x86_64-unknown-linux-musl
OUT=$ROOT/target/packaging
WORK=$(mktemp -d /tmp/dbtune-packaging.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "  ok   $*"; }
bad() { failed=$((failed + 1)); echo "  FAIL $*"; }
# check DESCRIPTION COMMAND...: runs COMMAND, records the outcome.
check() {
    local what=$1
    shift
    if "$@" >"$WORK/check.out" 2>&1; then ok "$what"; else
        bad "$what"
        sed 's/^/       | /' "$WORK/check.out" | head -20
    fi
}
# expect_eq DESCRIPTION ACTUAL EXPECTED
expect_eq() {
    if [[ "$2" == "$3" ]]; then ok "$1 ($2)"; else bad "$1: got '$2', expected '$3'"; fi
}
section() { echo; echo "== $*"; }

# Reproducible identity: the commit's own time as build date.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
COMMIT=$(git rev-parse --short=12 HEAD)
BUILD_DATE=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
VERSION=$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json,sys; print([p for p in json.load(sys.stdin)["packages"] if p["name"]=="dbtune-agent"][0]["version"])')

section "release binary ($TARGET) and packages: packaging/build-release.sh $TARGET"
rm -rf "$OUT"
packaging/build-release.sh "$TARGET"
BIN=target/$TARGET/release/dbtune-agent
check "no program interpreter (static)" bash -c "! readelf -lW '$BIN' | grep -q INTERP"
check "no shared-library dependencies" bash -c "! readelf -dW '$BIN' | grep -q NEEDED"
check "stripped (no symbol table)" bash -c "! readelf -SW '$BIN' | grep -q '\.symtab'"
VERSION_LINE=$("$BIN" --version)
echo "  $VERSION_LINE"
expect_eq "--version starts with the crate version" \
    "$(awk '{print $1, $2}' <<<"$VERSION_LINE")" "dbtune-agent $VERSION"
check "--version embeds commit $COMMIT" grep -qF "commit: $COMMIT" <<<"$VERSION_LINE"
check "--version embeds build date $BUILD_DATE (SOURCE_DATE_EPOCH)" grep -qF "built: $BUILD_DATE" <<<"$VERSION_LINE"

section "packages"
DEB=$(ls "$OUT"/*_amd64.deb)
RPM=$(ls "$OUT"/*.x86_64.rpm)
echo "  $DEB"
echo "  $RPM"

section ".deb metadata (dpkg-deb -I/-c)"
dpkg-deb -I "$DEB" | sed 's/^/  | /'
dpkg-deb -c "$DEB" | sed 's/^/  | /'
expect_eq "Version" "$(dpkg-deb -f "$DEB" Version)" "$VERSION-1"
expect_eq "Depends (base system only)" "$(dpkg-deb -f "$DEB" Depends)" "passwd"
expect_eq "Architecture" "$(dpkg-deb -f "$DEB" Architecture)" "amd64"
listing=$(dpkg-deb -c "$DEB" | awk '{print $1, $2, $6}')
for want in "-rwxr-xr-x 0/0 ./usr/bin/dbtune-agent" \
    "-rw-r----- 0/0 ./etc/dbtune/dbtune.yaml" \
    "-rw-r--r-- 0/0 ./usr/lib/systemd/system/dbtune-agent.service" \
    "-rw-r--r-- 0/0 ./usr/share/dbtune-agent/polkit/50-dbtune-agent.rules" \
    "-rw-r--r-- 0/0 ./usr/share/man/man1/dbtune-agent.1.gz"; do
    check "contains $want" grep -qxF -- "$want" <<<"$listing"
done
# The man page in the package is the one generated from --help (cli::man_page, checked by
# `cargo test --lib cli`), and it renders.
# (cargo-deb gzips man pages, as Debian policy wants.)
dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./usr/share/man/man1/dbtune-agent.1.gz | gzip -dc >"$WORK/man.1"
check "the packaged man page is packaging/dbtune-agent.1" cmp "$WORK/man.1" packaging/dbtune-agent.1
if command -v man >/dev/null; then
    check "the man page renders and lists the subcommands" bash -c "MANWIDTH=100 man -l '$WORK/man.1' 2>/dev/null | grep -q 'history'"
fi
dpkg-deb -e "$DEB" "$WORK/control"
check "conffiles lists /etc/dbtune/dbtune.yaml" grep -qx /etc/dbtune/dbtune.yaml "$WORK/control/conffiles"
check "postinst creates the system user" grep -q "useradd --system" "$WORK/control/postinst"
check "postinst enables the unit" grep -q "deb-systemd-helper enable dbtune-agent.service" "$WORK/control/postinst"
check "postinst never starts the unit on install" bash -c "! grep -Eq 'deb-systemd-invoke (start|restart) ' '$WORK/control/postinst'"
check "no maintainer script deletes the user" bash -c "! grep -Eq 'userdel|groupdel|deluser' '$WORK'/control/*"

section ".rpm metadata (rpm -qpi/-qpl/--scripts)"
rpm -qpi "$RPM" 2>/dev/null | sed 's/^/  | /'
rpm -qplv "$RPM" 2>/dev/null | sed 's/^/  | /'
rpm -qp --scripts "$RPM" 2>/dev/null | sed 's/^/  | /'
expect_eq "Version-Release" "$(rpm -qp --qf '%{VERSION}-%{RELEASE}' "$RPM" 2>/dev/null)" "$VERSION-1"
flags=$(rpm -qp --qf '[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]' "$RPM" 2>/dev/null)
for want in "-rwxr-xr-x root:root  /usr/bin/dbtune-agent" \
    "-rw-r----- root:dbtune cn /etc/dbtune/dbtune.yaml" \
    "-rw-r--r-- root:root  /usr/lib/systemd/system/dbtune-agent.service" \
    "-rw-r--r-- root:root  /usr/share/man/man1/dbtune-agent.1"; do
    check "file $want" grep -qxF -- "$want" <<<"$flags"
done
requires=$(rpm -qpR "$RPM" 2>/dev/null)
check "no shared-library requirements" bash -c "! grep -q '\.so' <<<'$requires'"
check "%pre creates the system user" bash -c "rpm -qp --scripts '$RPM' 2>/dev/null | grep -q 'useradd --system'"

# A fresh copy of the pristine root for each install.
fresh_root() {
    local r=$WORK/$1
    cp -a "$DBTUNE_PACKAGING_CHROOT" "$r"
    echo "$r"
}
# owner_mode ROOT PATH -> "user:group mode" resolved with the root's own passwd/group.
owner_mode() {
    local uid gid mode
    read -r uid gid mode < <(stat -c '%u %g %a' "$1$2")
    echo "$(chroot "$1" getent passwd "$uid" | cut -d: -f1):$(chroot "$1" getent group "$gid" | cut -d: -f1) $mode"
}
# Checks shared by both package formats after an install into root $1.
installed_checks() {
    local r=$1 pw
    pw=$(chroot "$r" getent passwd dbtune || true)
    check "user dbtune created" test -n "$pw"
    local uid shell
    uid=$(cut -d: -f3 <<<"$pw")
    shell=$(cut -d: -f7 <<<"$pw")
    check "dbtune is a system user (uid $uid < 1000)" test "${uid:-1000}" -lt 1000
    check "dbtune has no login shell ($shell)" grep -q nologin <<<"$shell"
    check "group dbtune created" chroot "$r" getent group dbtune
    expect_eq "/usr/bin/dbtune-agent" "$(owner_mode "$r" /usr/bin/dbtune-agent)" "root:root 755"
    expect_eq "/etc/dbtune/dbtune.yaml" "$(owner_mode "$r" /etc/dbtune/dbtune.yaml)" "root:dbtune 640"
    expect_eq "/var/lib/dbtune-agent" "$(owner_mode "$r" /var/lib/dbtune-agent)" "dbtune:dbtune 750"
    expect_eq "unit enabled" "$(SYSTEMD_OFFLINE=1 systemctl --root="$r" is-enabled dbtune-agent.service 2>&1)" "enabled"
    check "unit is wanted by multi-user.target" test -L "$r/etc/systemd/system/multi-user.target.wants/dbtune-agent.service"
    expect_eq "installed binary --version matches the package" \
        "$(chroot "$r" /usr/bin/dbtune-agent --version | awk '{print $2}')" "$VERSION"
    # systemd-analyze verify exits 0 on warnings: any output at all is a failure here.
    local verify
    verify=$(systemd-analyze verify --root="$r" dbtune-agent.service 2>&1 || echo "exit status $?")
    if [[ -z "$verify" ]]; then ok "systemd-analyze verify (no warnings)"; else
        bad "systemd-analyze verify"
        sed 's/^/       | /' <<<"$verify"
    fi
}

section ".deb installed into a throwaway Debian 12 root"
R=$(fresh_root deb)
cp "$DEB" "$R/tmp/pkg.deb"
check "dpkg -i" chroot "$R" dpkg -i /tmp/pkg.deb
installed_checks "$R"
exposure=$(systemd-analyze security --root="$R" --offline=yes --no-pager dbtune-agent.service 2>/dev/null |
    sed -n 's/.*Overall exposure level for dbtune-agent.service: \([0-9.]*\).*/\1/p')
check "systemd-analyze security exposure ${exposure:-?} <= 2.5" \
    python3 -c "import sys; sys.exit(0 if float('${exposure:-99}') <= 2.5 else 1)"

# Upgrade with a locally edited config and a changed packaged sample: the local file stays.
echo "# local edit" >>"$R/etc/dbtune/dbtune.yaml"
rm -rf "$WORK/repack"
dpkg-deb -R "$DEB" "$WORK/repack"
sed -i "s/^Version: .*/Version: $VERSION-2/" "$WORK/repack/DEBIAN/control"
echo "# new upstream comment" >>"$WORK/repack/etc/dbtune/dbtune.yaml"
dpkg-deb -b --root-owner-group "$WORK/repack" "$R/tmp/upgrade.deb" >/dev/null
check "upgrade (dpkg -i, keep local config)" chroot "$R" dpkg -i --force-confold /tmp/upgrade.deb
check "edited config kept on upgrade" grep -qx "# local edit" "$R/etc/dbtune/dbtune.yaml"
check "new sample set aside as .dpkg-dist" test -f "$R/etc/dbtune/dbtune.yaml.dpkg-dist"
expect_eq "config owner/mode after upgrade" "$(owner_mode "$R" /etc/dbtune/dbtune.yaml)" "root:dbtune 640"

check "dpkg -r" chroot "$R" dpkg -r dbtune-agent
check "binary removed" test ! -e "$R/usr/bin/dbtune-agent"
check "config kept after remove" test -f "$R/etc/dbtune/dbtune.yaml"
check "dpkg -P (purge)" chroot "$R" dpkg -P dbtune-agent
check "config gone after purge" test ! -e "$R/etc/dbtune/dbtune.yaml"
check "state directory gone after purge" test ! -e "$R/var/lib/dbtune-agent"
check "stat override gone after purge" bash -c "! chroot '$R' dpkg-statoverride --list /etc/dbtune/dbtune.yaml"
check "user dbtune left in place" chroot "$R" getent passwd dbtune
check "group dbtune left in place" chroot "$R" getent group dbtune

section ".rpm installed into a throwaway root (rpm --root, scriptlets run chrooted)"
R=$(fresh_root rpm)
rpm --root "$R" --initdb 2>/dev/null
# --nodeps: this root's packages are Debian's, so rpm's database cannot see /bin/sh or useradd.
check "rpm -i" rpm --root "$R" -i --nodeps "$RPM"
installed_checks "$R"
echo "# local edit" >>"$R/etc/dbtune/dbtune.yaml"
cargo generate-rpm --target "$TARGET" --output "$WORK/upgrade.rpm" -s 'release = "2"' >/dev/null
check "upgrade (rpm -U)" rpm --root "$R" -U --nodeps "$WORK/upgrade.rpm"
check "edited config kept on upgrade" grep -qx "# local edit" "$R/etc/dbtune/dbtune.yaml"
expect_eq "config owner/mode after upgrade" "$(owner_mode "$R" /etc/dbtune/dbtune.yaml)" "root:dbtune 640"
check "rpm -e" rpm --root "$R" -e --nodeps dbtune-agent
check "binary removed" test ! -e "$R/usr/bin/dbtune-agent"
check "unit disabled on erase" test ! -e "$R/etc/systemd/system/multi-user.target.wants/dbtune-agent.service"
check "edited config saved as .rpmsave" test -f "$R/etc/dbtune/dbtune.yaml.rpmsave"
check "no leftover /usr/share/dbtune-agent" test ! -e "$R/usr/share/dbtune-agent"
check "user dbtune left in place" chroot "$R" getent passwd dbtune

section "the .deb under a real systemd (systemd-nspawn)"
# Needs the agent to speak sd_notify (READY/WATCHDOG); LTO drops the sdnotify module from a
# binary whose main never uses it, so its absence is visible in the binary itself.
if grep -aq NOTIFY_SOCKET "$BIN"; then
    if bash .ci/packaging-systemd-e2e.sh "$DEB" "$DBTUNE_PACKAGING_CHROOT" | tee "$WORK/systemd.log"; then
        ok "systemd end-to-end ($(tail -1 "$WORK/systemd.log"))"
    else
        bad "systemd end-to-end ($(tail -1 "$WORK/systemd.log"))"
    fi
else
    echo "  SKIP this binary never reads NOTIFY_SOCKET: main.rs is not wired for sd_notify yet"
fi

section "polkit rule"
check "50-dbtune-agent.rules grants restart of the PostgreSQL unit only" \
    node packaging/polkit/test-rules.js packaging/polkit/50-dbtune-agent.rules

section "Kubernetes manifests (offline)"
check "yamllint" python3 -m yamllint -s \
    -d '{extends: default, rules: {line-length: {max: 110}, document-start: disable}}' packaging/kubernetes
check "schemas (kubernetes-validate --strict, 1.28 and current)" bash -c '
    cd packaging/kubernetes &&
    kubernetes-validate --strict --quiet -k 1.28.0 serviceaccount.yaml rbac-cnpg.yaml secret.yaml pvc.yaml deployment.yaml &&
    kubernetes-validate --strict --quiet serviceaccount.yaml rbac-cnpg.yaml secret.yaml pvc.yaml deployment.yaml'
# (tests/cnpg_manifests.rs, part of the test suite, also validates them against the vendor's
# core OpenAPI in shared/testdata/vendor-api and checks the RBAC rules against the adapter.)
check "every kustomization resource exists" bash -c '
    cd packaging/kubernetes && for f in $(sed -n "s/^  - //p" kustomization.yaml); do test -f "$f" || { echo "missing $f"; exit 1; }; done'
if command -v kubectl >/dev/null; then
    check "kubectl kustomize renders" kubectl kustomize packaging/kubernetes
fi

section "container image (assembled without Docker)"
check "umoci unpacks the OCI layout (image-amd64)" umoci unpack --image "$OUT/image-amd64/oci:dbtune-agent" "$WORK/bundle"
IMG=$WORK/bundle/rootfs
for f in usr/bin/dbtune-agent etc/ssl/certs/ca-certificates.crt etc/passwd etc/group; do
    check "image has /$f" test -f "$IMG/$f"
done
expect_eq "image user" "$(cat "$IMG/etc/passwd")" "dbtune:x:10001:10001:DBtune agent:/var/lib/dbtune-agent:/sbin/nologin"
expect_eq "image state dir owner" "$(stat -c '%u:%g %a' "$IMG/var/lib/dbtune-agent")" "10001:10001 750"
expect_eq "image config user" "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["process"]["user"]["uid"])' "$WORK/bundle/config.json")" "10001"
# Configuration as the image user: a mounted file (root-owned, world-readable) is read; DBT_*
# variables are read. (Both configs are incomplete on purpose: the error names what is missing.)
printf 'debug: false\n' >"$IMG/etc/dbtune/dbtune.yaml"
out=$(chroot --userspec=10001:10001 "$IMG" /usr/bin/dbtune-agent --check 2>&1 || true)
check "uid 10001 reads a mounted /etc/dbtune/dbtune.yaml" \
    bash -c "grep -q 'file /etc/dbtune/dbtune.yaml' <<<'$out' && ! grep -qi 'permission denied' <<<'$out'"
rm "$IMG/etc/dbtune/dbtune.yaml"
out=$(env -i DBT_DBTUNE_API_KEY=1b4e28ba-2fa1-11d2-883f-0016d3cca427 \
    DBT_DBTUNE_DATABASE_ID=6ba7b811-9dad-11d1-80b4-00c04fd430c8 \
    /usr/sbin/chroot --userspec=10001:10001 "$IMG" /usr/bin/dbtune-agent --check 2>&1 || true)
check "configuration from DBT_* variables (only the connection URL reported missing)" \
    bash -c "grep -q 'postgresql.connection_url' <<<'$out' && ! grep -q 'dbtune.api_key' <<<'$out'"
expect_eq "binary runs in the otherwise empty image root" \
    "$(chroot --userspec=10001:10001 "$IMG" /usr/bin/dbtune-agent --version | awk '{print $2}')" "$VERSION"

# The aarch64 and armv7 builds, packages, images and emulated runs: .ci/arm-check.sh.

section "sizes"
size() { stat -c %s "$1"; }
LAYER=$OUT/image-amd64/rootfs.tar.gz
printf '  %-34s %10d bytes\n' "binary (static, stripped)" "$(size "$BIN")" \
    ".deb" "$(size "$DEB")" ".rpm" "$(size "$RPM")" \
    "image layer (rootfs.tar.gz)" "$(size "$LAYER")" \
    "image layer uncompressed" "$(gzip -dc "$LAYER" | wc -c)"
echo "  (docker build and run of the image: .ci/image-check.sh; ARM sizes: .ci/arm-check.sh)"

echo
echo "packaging-check: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
