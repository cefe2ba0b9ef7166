#!/usr/bin/env bash
# A Python 3.11 base image made from Debian's packages, for building docker/*.Dockerfile
# where no image registry can be reached (with one, the Dockerfiles' defaults need none of this):
#
#   deploy/container-base.sh [ARCH] [TAG]     ARCH: amd64 (default) or arm64
#
# debootstrap (minbase + python3, python3-venv, ca-certificates) into a temporary folder,
# a venv at /opt/venv (first on PATH, so `pip` and `python` are the venv's), then
# `podman import` as TAG (default localhost/fedpeft-python:3.11-ARCH). A foreign ARCH needs
# qemu-user-static and its binfmt_misc entry (deploy/container-host.sh binfmt). Needs root.
# Does nothing if TAG exists. DEBIAN_MIRROR overrides the archive (default: apt's first URI).
set -euo pipefail
arch=${1:-amd64}
tag=${2:-localhost/fedpeft-python:3.11-$arch}
suite=bookworm
if podman image exists "$tag"; then
    echo "base image $tag exists"
    exit 0
fi
mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\([^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources \
    2>/dev/null | head -n1)}
mirror=${mirror:-http://deb.debian.org/debian}
root=$(mktemp -d /var/tmp/fedpeft-base.XXXXXX)
cleanup() {  # debootstrap mounts /proc and /sys in the root: unmount before removing it
    grep -o " $root/[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf --one-file-system "$root" "$root.log"
}
trap cleanup EXIT
start=$(date +%s)
host_arch=$(dpkg --print-architecture)
if [ "$arch" = "$host_arch" ]; then
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$suite" "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log"; exit 1; }
else
    # first stage on the host, second stage run by the emulated dpkg (binfmt_misc + qemu)
    debootstrap --arch "$arch" --foreign --variant=minbase \
        --include=python3,python3-venv,ca-certificates "$suite" "$root" "$mirror" \
        >"$root.log" 2>&1 || { tail -20 "$root.log"; exit 1; }
    chroot "$root" /debootstrap/debootstrap --second-stage >>"$root.log" 2>&1 \
        || { tail -20 "$root.log"; exit 1; }
fi
chroot "$root" python3 -m venv /opt/venv
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
path=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
tar -C "$root" -c . | podman import --arch "$arch" --os linux \
    --change "ENV PATH=$path" --change 'CMD ["python3"]' - "$tag" >/dev/null
echo "base image $tag: Debian $suite $arch, $(chroot "$root" python3 --version)," \
    "$(podman image inspect --format '{{.Size}}' "$tag" | numfmt --to=si)B, $(($(date +%s) - start)) s"
