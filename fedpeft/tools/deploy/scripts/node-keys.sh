#!/usr/bin/env bash
# Make SuperNode authentication key pairs (ECDSA P-384, OpenSSH format).
#
#   deploy/node-keys.sh OUT_DIR NAME [NAME...]                          (from a checkout)
#   python -m fedpeft.tools.deploy.secrets node-keys OUT_DIR NAME [NAME...]   (fedpeft installed)
#
# Shipped inside the fedpeft package (fedpeft.tools.deploy.secrets runs it for fedpeft-deploy);
# deploy/node-keys.sh in a checkout only execs this file.
#
# Writes OUT_DIR/NAME (private key, mode 600: stays on that device, passed to
# `flower-supernode --auth-supernode-private-key`) and OUT_DIR/NAME.pub (public
# key: register it with `flwr supernode register OUT_DIR/NAME.pub <connection>`).
# Existing keys are not overwritten.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 OUT_DIR NAME [NAME...]" >&2
    exit 2
fi
out=$1; shift
mkdir -p "$out"
umask 077
for name in "$@"; do
    if [[ ! $name =~ ^[A-Za-z0-9._-]+$ ]]; then
        echo "$0: bad key name '$name' (letters, digits, . _ - only)" >&2; exit 2
    fi
    if [ -e "$out/$name" ]; then echo "$0: $out/$name exists; not overwriting" >&2; exit 1; fi
    ssh-keygen -q -t ecdsa -b 384 -N "" -C "" -f "$out/$name"
    chmod 644 "$out/$name.pub"
    echo "wrote $out/$name (private) and $out/$name.pub (register this one)"
done
