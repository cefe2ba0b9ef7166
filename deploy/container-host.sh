#!/usr/bin/env bash
# Host adjustments for podman on restricted hosts. A host with a normal Docker or podman
# needs none of this: each adjustment is applied only when the check that it is needed fails.
#
#   deploy/container-host.sh adjust IMAGE    checks that podman can run IMAGE, applies what
#       is needed and prints, as shell assignments to eval, the podman options to use:
#         PODMAN_OPTS=(...)  global options of every podman command
#         BUILD_OPTS=(...)   options of `podman build`
#   deploy/container-host.sh binfmt ARCH     lets the kernel run ARCH binaries (qemu-user-static)
#
# What it may apply, in the order the errors show up:
#  * `crun: setrlimit RLIMIT_NOFILE: Operation not permitted` (root without
#    CAP_SYS_RESOURCE): an OCI runtime wrapper, named `crun` (podman refuses
#    --cgroups settings for a runtime of another name), that drops `process.rlimits` from
#    the bundle's config.json and runs /usr/bin/crun; passed as
#    `podman --runtime WRAPPER --cgroup-manager cgroupfs`. No podman configuration file
#    is changed. The wrapper lives in $FEDPEFT_HOST_DIR (default /var/lib/fedpeft-container-host).
#  * `crun: cgroups in hybrid mode not supported` (cgroup v1 controllers plus cgroup2 at
#    /sys/fs/cgroup/unified): unmounts /sys/fs/cgroup/unified, only in the caller's own
#    mount namespace: the caller sets FEDPEFT_HOST_MOUNT_NS=$(readlink /proc/self/ns/mnt)
#    and then runs this under `unshare -m`; in any other namespace it refuses.
#  * builds: `--isolation chroot` where containers needed the above (a build's RUN steps
#    then need no OCI runtime), and the host's CA bundle mounted read-only at
#    /etc/ssl/certs/ca-certificates.crt when it differs from the base image's (a host
#    behind a TLS-inspecting proxy: pip in the build would otherwise trust no server).
# Messages go to stderr; `adjust` exits non-zero if podman still cannot run IMAGE.
set -euo pipefail
dir=${FEDPEFT_HOST_DIR:-/var/lib/fedpeft-container-host}
say() { echo "host: $*" >&2; }

install_wrapper() {
    mkdir -p "$dir"
    local tmp
    tmp=$(mktemp "$dir/.crun.XXXXXX")
    cat >"$tmp" <<'PY'
#!/usr/bin/env python3
"""crun without process.rlimits (set by podman; refused without CAP_SYS_RESOURCE)."""
import json
import os
import sys

def strip(path, key):
    """Drop rlimits from the JSON at path (a bundle's config.json or an exec's process.json)."""
    with open(path) as f:
        spec = json.load(f)
    process = spec.get("process", {}) if key == "process" else spec
    if process.pop("rlimits", None) is not None:
        with open(path, "w") as f:
            json.dump(spec, f)


args = sys.argv[1:]
for i, arg in enumerate(args[:-1]):
    if arg == "--bundle":  # create/run: the container's process
        strip(os.path.join(args[i + 1], "config.json"), "process")
    elif arg == "--process":  # exec: a process of its own
        strip(args[i + 1], "")
os.execv("/usr/bin/crun", ["/usr/bin/crun", *args])
PY
    chmod 755 "$tmp"
    if cmp -s "$tmp" "$dir/crun"; then rm -f "$tmp"; else mv -f "$tmp" "$dir/crun"; fi
}

hybrid_cgroups() {
    [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = tmpfs ] \
        && [ "$(stat -fc %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]
}

# True only in a mount namespace other than the one named by FEDPEFT_HOST_MOUNT_NS (the
# caller's `readlink /proc/self/ns/mnt` before its `unshare -m`): never unmount in the host's.
own_mount_ns() {
    local here
    here=$(readlink /proc/self/ns/mnt)
    [ -n "${FEDPEFT_HOST_MOUNT_NS:-}" ] && [ -n "$here" ] && [ "$here" != "$FEDPEFT_HOST_MOUNT_NS" ]
}

adjust() {
    local image=$1 err opts=() build=() tries
    err=$(mktemp)
    trap 'rm -f "$err"' RETURN
    for tries in 1 2 3; do
        if podman "${opts[@]}" run --rm --network none "$image" true 2>"$err"; then
            break
        elif grep -q "setrlimit" "$err" && [ ${#opts[@]} = 0 ]; then
            say "podman cannot set rlimits here: crun wrapper $dir/crun"
            install_wrapper
            opts=(--runtime "$dir/crun" --cgroup-manager cgroupfs)
        elif grep -q "hybrid mode" "$err" && hybrid_cgroups; then
            own_mount_ns || { say "hybrid cgroups: run me under 'unshare -m' with FEDPEFT_HOST_MOUNT_NS set"; cat "$err" >&2; return 1; }
            say "hybrid cgroups: cgroup2 unmounted in this mount namespace only"
            umount /sys/fs/cgroup/unified
        else
            say "podman cannot run $image:"; cat "$err" >&2; return 1
        fi
        [ "$tries" = 3 ] && { cat "$err" >&2; return 1; }
    done
    [ ${#opts[@]} -gt 0 ] && build+=(--isolation chroot)
    if [ ${#opts[@]} = 0 ] && [ "$tries" = 1 ]; then say "podman runs containers as is"; fi
    # The host's CA bundle, where the image's trusts other CAs
    local host_ca=/etc/ssl/certs/ca-certificates.crt ctr
    if [ -f "$host_ca" ]; then
        ctr=$(podman "${opts[@]}" create "$image" true)
        if ! podman "${opts[@]}" cp "$ctr:$host_ca" - 2>/dev/null | tar -xO | cmp -s - "$host_ca"; then
            say "the host trusts CAs the image does not: builds mount $host_ca"
            build+=(--volume "$host_ca:$host_ca:ro")
        fi
        podman "${opts[@]}" rm "$ctr" >/dev/null
    fi
    printf 'PODMAN_OPTS=(%s)\nBUILD_OPTS=(%s)\n' "${opts[*]@Q}" "${build[*]@Q}"
}

binfmt() {
    local arch=$1 qemu
    case "$arch" in arm64 | aarch64) qemu=aarch64 ;; *) qemu=$arch ;; esac
    [ "$(uname -m)" = "$qemu" ] && { say "native $arch"; return 0; }
    local entry=/proc/sys/fs/binfmt_misc/qemu-$qemu
    if [ -e "$entry" ] && head -n1 "$entry" | grep -q enabled; then
        say "binfmt_misc runs $arch binaries ($(sed -n 's/^interpreter //p' "$entry"))"
        return 0
    fi
    local conf=/usr/lib/binfmt.d/qemu-$qemu.conf
    [ -f "$conf" ] || { say "no $conf: apt-get install qemu-user-static"; return 1; }
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        say "mounting binfmt_misc at /proc/sys/fs/binfmt_misc"
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    [ -e "$entry" ] || { say "registering $conf"; cat "$conf" >/proc/sys/fs/binfmt_misc/register; }
    head -n1 "$entry" | grep -q enabled || echo 1 >"$entry"
    say "binfmt_misc runs $arch binaries ($(sed -n 's/^interpreter //p' "$entry"))"
}

case "${1:-}" in
adjust) adjust "${2:?IMAGE}" ;;
binfmt) binfmt "${2:?ARCH}" ;;
*)
    sed -n '2,12p' "$0" >&2
    exit 2
    ;;
esac
