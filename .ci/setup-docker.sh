#!/usr/bin/env bash
# Installs the real Docker Engine the Docker adapter's tests talk to (Debian's docker.io, which
# the tests start themselves with --iptables=false --bridge=none and a private socket) and
# busybox-static for the images they build with `docker import` (no registry is reachable).
# Idempotent. Writes .cache/docker.env (DBTUNE_TEST_DOCKERD, DBTUNE_TEST_BUSYBOX).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$repo/.cache"
if ! command -v dockerd >/dev/null 2>&1 || [ ! -x /bin/busybox ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io busybox-static >/dev/null
fi
dockerd_bin="$(command -v dockerd)"
docker_cli="$(command -v docker)"
{
  echo "export DBTUNE_TEST_DOCKERD=$dockerd_bin"
  echo "export DBTUNE_TEST_DOCKER_CLI=$docker_cli"
  echo "export DBTUNE_TEST_BUSYBOX=/bin/busybox"
} >"$repo/.cache/docker.env"
echo "setup-docker: $("$dockerd_bin" --version) ready; source $repo/.cache/docker.env"
