#!/usr/bin/env bash
# Installs the real AWS-compatible peer the cloud tests talk to: moto's server mode, from PyPI,
# into a private venv. Idempotent: a second run only re-writes the env file.
# Exports (in .cache/cloud.env, source it before `cargo test`):
#   DBTUNE_TEST_MOTO=<repo>/.cache/venv-moto/bin/moto_server
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="$repo/.cache/venv-moto"
envfile="$repo/.cache/cloud.env"
moto_version="5.2.5"

mkdir -p "$repo/.cache"
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq python3-venv >/dev/null
fi
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import moto, flask_cors; assert moto.__version__ == '$moto_version'" 2>/dev/null; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$moto_version"
fi
test -x "$venv/bin/moto_server"
echo "export DBTUNE_TEST_MOTO=$venv/bin/moto_server" >"$envfile"
echo "setup-cloud: moto $moto_version ready; source $envfile"
