#!/usr/bin/env bash
# Installs what .ci/packaging-check.sh needs; idempotent, installs only what is missing.
# Works as root on a fresh Debian 12 machine with Rust, Python 3.11 and node.
# Writes .cache/packaging.env (sourced by packaging-check.sh):
#   PATH                      with ~/.cargo/bin (cargo-deb, cargo-generate-rpm)
#   DBTUNE_PACKAGING_CHROOT   a pristine Debian 12 minbase root (cached outside the checkout;
#                             the check copies it before installing anything into it)
# Unless DBTUNE_PACKAGING_ARM=0 it also installs the ARM cross builds and their emulation
# (.ci/arm-check.sh, packaging/build-release.sh): the aarch64 and armv7 musl targets (rust-src
# for armv7 when rustup has no prebuilt std for it), Debian's cross gcc for ring's C code,
# musl-dev:armhf (armv7's C runtime), qemu-user-static and binfmt-support.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$HOME/.cargo/bin:$PATH"
TARGET=x86_64-unknown-linux-musl
CHROOT=${DBTUNE_PACKAGING_CHROOT:-/var/cache/dbtune-agent-ci/bookworm-minbase}
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

log() { echo "setup-packaging: $*"; }

# Debian packages: musl-gcc (ring's C/asm for the musl target), rpm (inspection and a
# throwaway install), debootstrap (the throwaway root), systemd-analyze, umoci (unpacks the
# OCI image layout), binutils (readelf), node (polkit rule test).
need=()
command -v musl-gcc >/dev/null || need+=(musl-tools)
command -v rpm >/dev/null || need+=(rpm)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v umoci >/dev/null || need+=(umoci)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v readelf >/dev/null || need+=(binutils)
command -v node >/dev/null || need+=(nodejs)
ARM=${DBTUNE_PACKAGING_ARM:-1}
if [[ $ARM == 1 ]]; then
    command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
    [[ -d /usr/aarch64-linux-gnu/include ]] || need+=(libc6-dev-arm64-cross)
    command -v arm-linux-gnueabihf-gcc >/dev/null || need+=(gcc-arm-linux-gnueabihf)
    [[ -d /usr/arm-linux-gnueabihf/include ]] || need+=(libc6-dev-armhf-cross)
    [[ -f /usr/lib/arm-linux-musleabihf/libc.a ]] || need+=(musl-dev:armhf)
    command -v qemu-aarch64-static >/dev/null && command -v qemu-arm-static >/dev/null || need+=(qemu-user-static)
    command -v update-binfmts >/dev/null || need+=(binfmt-support)
    # musl-dev:armhf is a foreign-architecture package (Multi-Arch: same).
    dpkg --print-foreign-architectures | grep -qx armhf || dpkg --add-architecture armhf
fi
if ((${#need[@]})); then
    log "apt-get install ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! rustup target list --installed | grep -qx "$TARGET"; then
    log "rustup target add $TARGET"
    rustup target add "$TARGET"
fi

if [[ $ARM == 1 ]]; then
    if ! rustup target list --installed | grep -qx aarch64-unknown-linux-musl; then
        log "rustup target add aarch64-unknown-linux-musl"
        rustup target add aarch64-unknown-linux-musl
    fi
    # Where rustup has no prebuilt armv7 musl std (the mirror this CI reaches answers 404),
    # build-release.sh builds std from rust-src instead.
    if ! rustup target list --installed | grep -qx armv7-unknown-linux-musleabihf &&
        ! rustup target add armv7-unknown-linux-musleabihf >/dev/null 2>&1; then
        if ! rustup component list --installed | grep -q '^rust-src'; then
            log "no prebuilt rust-std for armv7-unknown-linux-musleabihf: rustup component add rust-src"
            rustup component add rust-src
        fi
    fi
fi

# Cargo tools: pinned, built once (~/.cargo/bin survives between runs on the same machine).
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
    log "cargo install cargo-deb $CARGO_DEB_VERSION"
    cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION"
fi
if ! cargo generate-rpm --version 2>/dev/null | grep -q "$CARGO_GENERATE_RPM_VERSION"; then
    log "cargo install cargo-generate-rpm $CARGO_GENERATE_RPM_VERSION"
    cargo install --locked --quiet cargo-generate-rpm --version "$CARGO_GENERATE_RPM_VERSION"
fi

# Manifest validation (schemas ship inside the kubernetes-validate package: works offline).
python3 -c 'import yamllint' 2>/dev/null || need_pip=1
python3 -c 'import kubernetes_validate' 2>/dev/null || need_pip=1
if [[ ${need_pip:-0} == 1 ]]; then
    log "pip install yamllint kubernetes-validate"
    python3 -m pip install -q --disable-pip-version-check yamllint kubernetes-validate
fi

# The throwaway root: Debian 12 minbase plus systemd (systemctl/deb-systemd-helper work on
# files in a chroot; booted as PID 1 by systemd-nspawn for the end-to-end run), passwd
# (useradd), procps (/bin/kill for ExecReload), dbus and polkitd (the restart permission).
# Uses the same mirror as the host's apt configuration.
if [[ ! -x "$CHROOT/usr/bin/systemctl" || ! -x "$CHROOT/bin/kill" || ! -x "$CHROOT/usr/lib/polkit-1/polkitd" ]]; then
    mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1 || true)
    if [[ -z "$mirror" ]]; then
        mirror=$(awk '$1 == "deb" && $3 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    fi
    [[ -n "$mirror" ]] || { echo "setup-packaging: no Debian mirror found in the apt configuration" >&2; exit 1; }
    log "debootstrap bookworm minbase into $CHROOT (mirror from apt config)"
    rm -rf "$CHROOT.tmp"
    mkdir -p "$(dirname "$CHROOT")"
    debootstrap --variant=minbase --include=systemd,passwd,procps bookworm "$CHROOT.tmp" "$mirror" >/dev/null
    # apt (not debootstrap) resolves polkitd's dependencies (logind).
    chroot "$CHROOT.tmp" apt-get install -y -qq --no-install-recommends dbus polkitd >/dev/null 2>&1
    chroot "$CHROOT.tmp" apt-get clean
    rm -rf "$CHROOT"
    mv "$CHROOT.tmp" "$CHROOT"
fi

mkdir -p "$ROOT/.cache"
cat >"$ROOT/.cache/packaging.env" <<ENV
export PATH="$HOME/.cargo/bin:\$PATH"
export DBTUNE_PACKAGING_CHROOT="$CHROOT"
export DBTUNE_PACKAGING_ARM="$ARM"
ENV
log "ready (env in .cache/packaging.env)"
