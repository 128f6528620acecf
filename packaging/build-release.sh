#!/usr/bin/env bash
# Builds the static release binary, the .deb, the .rpm and the FROM-scratch image layer of
# every target given, the way CI does:
#
#   packaging/build-release.sh [TARGET...]
#
# TARGET: x86_64-unknown-linux-musl (default), aarch64-unknown-linux-musl,
# armv7-unknown-linux-musleabihf, or `all`. Outputs: target/<TARGET>/release/dbtune-agent,
# target/packaging/*.{deb,rpm}, target/packaging/image-<arch>/ (rootfs.tar.gz + OCI layout).
#
# Needs the tools .ci/setup-packaging.sh installs (cargo-deb, cargo-generate-rpm; for ARM the
# Debian cross gcc, musl-dev:armhf and rust-src). The per-target linker and C compiler live in
# .cargo/config.toml. Honours SOURCE_DATE_EPOCH (default: the commit's time, reproducible).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
OUT=$ROOT/target/packaging
ALL=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf)

targets=("$@")
((${#targets[@]})) || targets=(x86_64-unknown-linux-musl)
[[ ${targets[0]} == all ]] && targets=("${ALL[@]}")

VERSION=$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json,sys; print([p for p in json.load(sys.stdin)["packages"] if p["name"]=="dbtune-agent"][0]["version"])')

log() { echo "build-release: $*"; }

# The armv7 musl std is built from rust-src when rustup has no prebuilt rust-std for it (the
# mirror this CI reaches has none). The musl target's self-contained C runtime that rust-std
# would carry is then assembled from Debian files: musl-dev:armhf (crt1/crti/crtn, libc.a)
# and the armhf cross gcc (crtbegin/crtend, and libgcc_eh.a as the unwinder: it implements
# the ARM EHABI _Unwind_* API that std's panic=unwind calls).
armv7_sysroot() {
    local d=$ROOT/target/cross-sysroot/armv7-unknown-linux-musleabihf gcclib f
    gcclib=$(dirname "$(arm-linux-gnueabihf-gcc -print-libgcc-file-name)")
    mkdir -p "$d"
    for f in crt1.o crti.o crtn.o Scrt1.o rcrt1.o libc.a; do
        [[ -f /usr/lib/arm-linux-musleabihf/$f ]] || {
            echo "build-release: /usr/lib/arm-linux-musleabihf/$f missing (apt-get install musl-dev:armhf)" >&2
            return 1
        }
        ln -sfn "/usr/lib/arm-linux-musleabihf/$f" "$d/$f"
    done
    for f in crtbegin.o crtbeginS.o crtend.o crtendS.o; do ln -sfn "$gcclib/$f" "$d/$f"; done
    ln -sfn "$gcclib/libgcc_eh.a" "$d/libunwind.a"
    echo "$d"
}

# build TARGET: the static, stripped release binary.
build() {
    local t=$1 sysroot
    if rustup target list --installed | grep -qx "$t"; then
        cargo build --release --locked --target "$t"
    elif [[ $t == armv7-unknown-linux-musleabihf ]]; then
        log "no prebuilt rust-std for $t: building std from rust-src (-Z build-std)"
        sysroot=$(armv7_sysroot)
        RUSTC_BOOTSTRAP=1 CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_RUSTFLAGS="-L native=$sysroot" \
            cargo build --release --locked --target "$t" -Z build-std=std,panic_unwind
    else
        echo "build-release: target $t is not installed (rustup target add $t)" >&2
        return 1
    fi
    local bin=target/$t/release/dbtune-agent
    if readelf -lW "$bin" | grep -q INTERP || readelf -dW "$bin" | grep -q NEEDED; then
        echo "build-release: $bin is not static" >&2
        return 1
    fi
}

for t in "${targets[@]}"; do
    case $t in
    x86_64-unknown-linux-musl) deb=amd64 rpm=x86_64 oci=amd64 variant= ;;
    aarch64-unknown-linux-musl) deb=arm64 rpm=aarch64 oci=arm64 variant=v8 ;;
    armv7-unknown-linux-musleabihf) deb=armhf rpm=armv7hl oci=arm variant=v7 ;;
    *)
        echo "build-release: unknown target $t (expected one of ${ALL[*]}, or all)" >&2
        exit 2
        ;;
    esac
    start=$(date +%s)
    log "$t: cargo build --release"
    build "$t"
    bin=target/$t/release/dbtune-agent
    mkdir -p "$OUT"
    rm -f "$OUT"/*_"$deb".deb "$OUT"/*."$rpm".rpm
    cargo deb --no-build --target "$t" --output "$OUT/" >/dev/null
    cargo generate-rpm --target "$t" --arch "$rpm" --output "$OUT/dbtune-agent-$VERSION-1.$rpm.rpm" >/dev/null
    python3 packaging/build-image-rootfs.py "$bin" "$OUT/image-$oci" --arch "$oci" \
        ${variant:+--variant "$variant"} --version "$VERSION" >/dev/null
    log "$t: $(stat -c %s "$bin") bytes binary, $(ls "$OUT"/*_"$deb".deb), $OUT/dbtune-agent-$VERSION-1.$rpm.rpm, $OUT/image-$oci ($(($(date +%s) - start)) s)"
done
