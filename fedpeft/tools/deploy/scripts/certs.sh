#!/usr/bin/env bash
# Make a private CA and a SuperLink server certificate signed by it.
#
#   deploy/certs.sh OUT_DIR NAME [NAME...]                      (from a checkout)
#   python -m fedpeft.tools.deploy.secrets certs OUT_DIR NAME [NAME...] (fedpeft installed)
#
# Shipped inside the fedpeft package (fedpeft.tools.deploy.secrets runs it for fedpeft-deploy);
# deploy/certs.sh in a checkout only execs this file.
#
# NAMEs are the host names and IP addresses SuperNodes and the flwr CLI use to
# reach the SuperLink (every one goes into the certificate's subjectAltName),
# e.g. `deploy/certs.sh certs superlink.example.org 192.168.1.20 localhost 127.0.0.1`.
# Writes OUT_DIR/ca.crt, ca.key, server.pem, server.key (keys mode 600).
# Copy ca.crt (only) to every SuperNode and to the machine running `flwr`;
# ca.key never leaves this machine. Existing files are not overwritten.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 OUT_DIR NAME [NAME...]  (host names / IPs of the SuperLink)" >&2
    exit 2
fi
out=$1; shift
days=${CERT_DAYS:-365}
mkdir -p "$out"
for f in ca.crt ca.key server.pem server.key; do
    if [ -e "$out/$f" ]; then echo "$0: $out/$f exists; not overwriting" >&2; exit 1; fi
done
san=""
for name in "$@"; do
    if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then entry="IP:$name"; else entry="DNS:$name"; fi
    san="${san:+$san,}$entry"
done
umask 077
openssl ecparam -name prime256v1 -genkey -noout -out "$out/ca.key"
openssl req -x509 -new -key "$out/ca.key" -sha256 -days "$days" \
    -subj "/CN=FedPEFT private CA" -out "$out/ca.crt" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$out/server.key"
openssl req -new -key "$out/server.key" -subj "/CN=$1" -out "$out/server.csr"
cat > "$out/server.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san
EXT
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -CAcreateserial -days "$days" -sha256 -extfile "$out/server.ext" \
    -out "$out/server.pem" 2>/dev/null
rm -f "$out/server.csr" "$out/server.ext" "$out/ca.srl"
chmod 644 "$out/ca.crt" "$out/server.pem"
echo "wrote $out/{ca.crt,ca.key,server.pem,server.key} for: $*"
