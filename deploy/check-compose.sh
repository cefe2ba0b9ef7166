#!/usr/bin/env bash
# Validate the compose stacks offline with docker-compose 1.29 (from PyPI; no Docker engine).
#
#   deploy/check-compose.sh [VENV_DIR]    (default /tmp/fedpeft-compose-venv)
#
# Installs docker-compose 1.29.2 into a throwaway venv (pyyaml 5.4.1 needs cython<3 and no
# build isolation), copies the compose files to a temporary directory with empty stand-ins
# for the secrets, and runs `docker-compose config -q` on every overlay stack, and on the
# base and the full stack with docker/with-gpu.yml.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-/tmp/fedpeft-compose-venv}
if [ ! -x "$venv/bin/docker-compose" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "cython<3" wheel setuptools
    "$venv/bin/pip" install -q --no-build-isolation pyyaml==5.4.1
    "$venv/bin/pip" install -q docker-compose==1.29.2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$root/docker-compose.yml" "$root/docker" "$work/"
mkdir -p "$work/certs" "$work/keys"
touch "$work"/certs/{ca.crt,server.pem,server.key} "$work"/keys/supernode-{1,2}
cd "$work"
stack=(-f docker-compose.yml)
for overlay in "" docker/with-state.yml docker/with-tls.yml docker/with-auth.yml; do
    [ -n "$overlay" ] && stack+=(-f "$overlay")
    "$venv/bin/docker-compose" "${stack[@]}" config -q
    echo "ok: docker-compose ${stack[*]} config -q"
done
# The GPU overlay stacks on any of them: on the base alone and on the full stack.
for gpu_stack in "-f docker-compose.yml" "${stack[*]}"; do
    read -ra files <<<"$gpu_stack"
    "$venv/bin/docker-compose" "${files[@]}" -f docker/with-gpu.yml config -q
    merged=$("$venv/bin/docker-compose" "${files[@]}" -f docker/with-gpu.yml config)
    gpus=$(grep -c "driver: nvidia" <<<"$merged" || true)
    [ "$gpus" = 2 ] || { echo "expected 2 nvidia devices (one per SuperNode), got $gpus"; exit 1; }
    echo "ok: docker-compose ${files[*]} -f docker/with-gpu.yml config -q (2 nvidia devices)"
done
