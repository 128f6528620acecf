#!/usr/bin/env bash
# Installs the real Patroni peer the Patroni adapter tests run against: etcd from Debian and
# Patroni (etcd3 DCS) from PyPI into a private venv under .cache/. Idempotent: a second run only
# re-writes the env file. Works as root on a fresh Debian 12 machine.
# Exports (in .cache/patroni.env, sourced by tests/run.sh before `cargo test`):
#   DBTUNE_TEST_PATRONI=<repo>/.cache/venv-patroni/bin/patroni
#   DBTUNE_TEST_ETCD=/usr/bin/etcd
# Time on a 2-core machine: apt etcd-server about 5 s, venv + pip about 10 s (up to a minute
# when PyPI is slow).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
# Debian's python, not a pyenv one under /root: Patroni runs as `postgres`, which must be able
# to execute the interpreter.
python=/usr/bin/python3
venv="$repo/.cache/venv-patroni"
envfile="$repo/.cache/patroni.env"
patroni_version="4.1.5"

mkdir -p "$repo/.cache"
need=()
command -v etcd >/dev/null || need+=(etcd-server)
# openssl: the HTTPS test makes a throwaway CA; setpriv (util-linux) runs Patroni as postgres.
command -v openssl >/dev/null || need+=(openssl)
command -v setpriv >/dev/null || need+=(util-linux)
[ -x /usr/lib/postgresql/15/bin/postgres ] || need+=(postgresql-15)
"$python" -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if ((${#need[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import patroni.version as v, psycopg2, etcd; assert v.__version__ == '$patroni_version'" 2>/dev/null; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check "patroni[etcd3]==$patroni_version" psycopg2-binary
fi
# The postgres user runs Patroni from the venv: every directory on the way must be traversable.
chmod 755 "$repo/.cache" "$venv"
test -x "$venv/bin/patroni"
{
    echo "export DBTUNE_TEST_PATRONI=$venv/bin/patroni"
    echo "export DBTUNE_TEST_ETCD=$(command -v etcd)"
} >"$envfile"
echo "setup-patroni: patroni $patroni_version and $(etcd --version | head -1) ready; source $envfile"
