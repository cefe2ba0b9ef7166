#!/usr/bin/env bash
# The container drill: build the images from this repository with podman and run a TLS +
# node-authentication federation in containers, with the project's own compose stack
# (docker-compose.yml + docker/with-state.yml + docker/with-tls.yml + docker/with-auth.yml):
#
#   deploy/container-drill.sh            (or `make containers`; root, podman, a few minutes)
#
#  1. images: a Python base made from Debian's packages (deploy/container-base.sh) unless
#     BASE_IMAGE names one; the SuperLink image (docker/superlink.Dockerfile on that base:
#     Flower's own image is the default for users) and the app image (docker/app.Dockerfile),
#     each timed and measured; with ARM64=1 (the default) the app image for linux/arm64 too.
#  2. the federation, every container with --network host inside a loopback-only network
#     namespace (unshare -n): SuperLink, ServerApp executor and two SuperNodes, their
#     `podman run` commands rendered from the compose stack (python -m fedpeft.tools.deploy.podman);
#     the operator (`flwr` in the app image) registers both keys and submits a 2-round run;
#     metrics.json and the run's tensors must land in ./outputs on the host. supernode-1 trains
#     its partition; supernode-2 reads its own image folder from a mounted volume.
#  3. drills: supernode-1 is stopped while it trains and started again (it must train in
#     round 2); a SuperNode with an unregistered key is refused; the SuperLink, restarted,
#     still lists the run (state overlay) and both SuperNodes come back online.
#  4. arm64: supernode-2 replaced by the linux/arm64 image, emulated (qemu-user-static),
#     for a 1-round run beside the amd64 supernode-1; its per-message times are printed.
#
# Everything runs in DRILL_WORK (default deployment/containers, git-ignored). Host
# adjustments (deploy/container-host.sh) are applied only where a check shows they are
# needed. Every container it starts is named fedpeft-drill-* and removed on exit.
# Environment: TORCH_INDEX_URL (default https://pypi.org/simple: CUDA wheels on x86-64,
# 5+ GB; https://download.pytorch.org/whl/cpu makes a much smaller image), BASE_IMAGE,
# SUPERLINK_BASE_IMAGE, ARM64=0 to skip step 4, REBUILD=1 to rebuild existing images.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${DRILL_WORK:-$root/deployment/containers}
arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
BASE_IMAGE=${BASE_IMAGE:-localhost/fedpeft-python:3.11-$arch}
SUPERLINK_BASE_IMAGE=${SUPERLINK_BASE_IMAGE:-$BASE_IMAGE}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://pypi.org/simple}
ARM64=${ARM64:-1}
# PyPI's aarch64 torch 2.14.1 cannot be installed (docker/constraints-arm64.txt says why)
ARM64_TORCH_INDEX_URL=${ARM64_TORCH_INDEX_URL:-https://pypi.org/simple}
ARM64_CONSTRAINTS=${ARM64_CONSTRAINTS:-docker/constraints-arm64.txt}
FLWR_VERSION=1.42.0
SUPERLINK_IMAGE=localhost/fedpeft-superlink:$FLWR_VERSION
APP_IMAGE=localhost/fedpeft-app:$arch
ARM64_BASE=localhost/fedpeft-python:3.11-arm64
ARM64_IMAGE=localhost/fedpeft-app:arm64
ARM64_IMAGES=${ARM64_IMAGES:-1}  # images per class the emulated arm64 SuperNode holds
STACK=(-f docker-compose.yml -f docker/with-state.yml -f docker/with-tls.yml -f docker/with-auth.yml)
NAMES=(superlink serverapp supernode-1 supernode-2 rogue)  # fedpeft-drill-<name>
RUN_CONFIG="model.img-size=28 data.source='builtin' data.dataset='digits' data.train-size=0 \
data.test-size=0 server.fraction-train=1.0 server.min-train-nodes=2 \
peft.method='lora' peft.lora.lr=0.005 train.num-threads=1 output.dir='/app/outputs'"
log() { echo "[$(date +%H:%M:%S)] $*"; }
die() {
    echo "FAIL: $*" >&2
    exit 1
}
pm() { podman "${PODMAN_OPTS[@]}" "$@"; }

# ---------------------------------------------------------------------------------------
# Phase 1, in the host's network (builds fetch from PyPI): images, then phase 2 isolated.
# ---------------------------------------------------------------------------------------
build() {  # build TAG DOCKERFILE [podman build options]: times it, records time and size
    local tag=$1 file=$2
    shift 2
    try_build "$tag" "$file" "$@" || die "building $tag"
}

try_build() {  # as build, but returns non-zero when the build fails
    local tag=$1 file=$2 start secs size
    shift 2
    if pm image exists "$tag" && [ "${REBUILD:-0}" != 1 ]; then
        log "image $tag exists (REBUILD=1 rebuilds it)"
        return 0
    fi
    log "building $tag from $file"
    start=$(date +%s)
    nice -n 19 podman "${PODMAN_OPTS[@]}" build "${BUILD_OPTS[@]}" -f "$file" -t "$tag" "$@" \
        "$root" >"$work/build-${tag##*/}.log" 2>&1 \
        || { tail -n 30 "$work/build-${tag##*/}.log"; return 1; }
    secs=$(($(date +%s) - start))
    size=$(pm image inspect --format '{{.Size}}' "$tag")
    echo "$tag $secs s $size B" >>"$work/builds.txt"
    log "built $tag in ${secs} s, $(numfmt --to=si "$size")B"
}

phase1() {
    [ "$(id -u)" = 0 ] || die "run as root (network namespaces, debootstrap)"
    for tool in podman openssl ssh-keygen unshare ip python3; do
        command -v "$tool" >/dev/null || die "$tool not found (apt-get install podman iproute2 openssh-client)"
    done
    mkdir -p "$work"
    : >"$work/builds.txt"
    : >"$work/measured.txt"
    export FEDPEFT_HOST_MOUNT_NS
    FEDPEFT_HOST_MOUNT_NS=$(readlink /proc/self/ns/mnt)
    if [[ "$BASE_IMAGE" == localhost/fedpeft-python:* ]]; then
        command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"
        nice -n 19 "$root/deploy/container-base.sh" "$arch" "$BASE_IMAGE"
    fi
    PODMAN_OPTS=()
    local adjustments
    adjustments=$(unshare -m "$root/deploy/container-host.sh" adjust "$BASE_IMAGE") \
        || die "podman cannot run containers here"
    eval "$adjustments"
    build "$SUPERLINK_IMAGE" docker/superlink.Dockerfile --build-arg "BASE_IMAGE=$SUPERLINK_BASE_IMAGE"
    build "$APP_IMAGE" docker/app.Dockerfile --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL"
    if [ "$ARM64" = 1 ]; then
        "$root/deploy/container-host.sh" binfmt arm64
        nice -n 19 "$root/deploy/container-base.sh" arm64 "$ARM64_BASE"
        rm -f "$work/arm64-build-failed"
        try_build "$ARM64_IMAGE" docker/app.Dockerfile --platform linux/arm64 \
            --build-arg "BASE_IMAGE=$ARM64_BASE" --build-arg "TORCH_INDEX_URL=$ARM64_TORCH_INDEX_URL" \
            --build-arg "CONSTRAINTS=$ARM64_CONSTRAINTS" \
            || touch "$work/arm64-build-failed"  # the federation still runs; the summary fails
    fi
    log "phase 2: a loopback-only network namespace"
    exec unshare -n -m env DRILL_PHASE=2 "$0" "$@"
}

# ---------------------------------------------------------------------------------------
# Phase 2, inside `unshare -n -m`: only `lo` exists, so nothing leaves 127.0.0.1.
# ---------------------------------------------------------------------------------------
declare -a CHECKS=()
failed=0
check() {  # check "what" COMMAND...: records ok/FAIL
    local what=$1
    shift
    if "$@"; then CHECKS+=("ok    $what"); else CHECKS+=("FAIL  $what"); failed=1; fi
    echo "${CHECKS[-1]}"
}

cleanup() {
    local rc=$? name left
    for name in "${NAMES[@]}" operator; do
        pm rm -f -t 3 "fedpeft-drill-$name" >/dev/null 2>&1 || true
    done
    # an emulated container can take longer than rm's wait to die: retry for a while
    for _ in $(seq 15); do
        left=$(pm ps -a --format '{{.Names}}' | grep -c '^fedpeft-drill-' || true)
        [ "$left" = 0 ] && break
        sleep 2
        pm ps -a --format '{{.Names}}' | grep '^fedpeft-drill-' | xargs -r podman "${PODMAN_OPTS[@]}" rm -f -t 3 >/dev/null 2>&1 || true
    done
    echo
    echo "== container drill summary ($(date -u +%F), $(uname -m)) =="
    [ -s "$work/builds.txt" ] && sed 's/^/build  /' "$work/builds.txt"
    [ -s "$work/measured.txt" ] && cat "$work/measured.txt"
    printf '%s\n' "${CHECKS[@]}"
    if [ "$left" = 0 ]; then
        echo "ok    every fedpeft-drill-* container removed"
    else
        echo "FAIL  $left fedpeft-drill-* containers left"
        rc=1
    fi
    [ "$failed" = 0 ] || rc=1
    echo "== $([ "$rc" = 0 ] && echo PASSED || echo FAILED) (work dir $work) =="
    exit "$rc"
}

render() {  # render SERVICE NAME [renderer options]: the service's podman arguments
    local service=$1 name=$2
    shift 2
    python3 -m fedpeft.tools.deploy.podman "${STACK[@]}" --root "$root" --project-dir "$work" \
        "$service" --name "fedpeft-drill-$name" "$@"
}

start() {  # start SERVICE NAME IMAGE [renderer options]
    local service=$1 name=$2 image=$3 args
    shift 3
    args=$(cd "$root" && PYTHONPATH=$root render "$service" "$name" --image "$image" "$@") \
        || die "rendering $service"
    mapfile -t args <<<"$args"
    echo "\$ podman ${args[*]}" >>"$work/commands.txt"
    pm "${args[@]}" >/dev/null || die "starting $name"
}

flwr_op() {  # the operator's flwr CLI, in the app image
    pm run --rm --name fedpeft-drill-operator --network host --entrypoint flwr \
        -e FLWR_HOME=/op -v "$work/operator:/op" -v "$work/certs/ca.crt:/op/ca.crt:ro" \
        -v "$work/keys:/keys:ro" -v "$work/app:/src:ro" -w /tmp "$APP_IMAGE" "$@"
}

nodes_online() {  # how many SuperNodes are online
    flwr_op supernode ls fedpeft --format json 2>/dev/null \
        | python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(n.get("status")=="online" for n in d.get("nodes",[])))' \
            2>/dev/null || echo 0
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds
    local deadline=$(($(date +%s) + $1)) what=$2
    shift 2
    until "$@"; do
        [ "$(date +%s)" -lt "$deadline" ] || {
            log "timed out waiting for $what"
            return 1
        }
        sleep 2
    done
}

online_at_least() { [ "$(nodes_online)" -ge "$1" ]; }
online_since() {  # online_since N TIME: N SuperNodes online, each (re)connected at or after TIME (UTC)
    flwr_op supernode ls fedpeft --format json 2>/dev/null | python3 -c '
import json, sys
nodes = json.load(sys.stdin).get("nodes", [])
fresh = [n for n in nodes if n.get("status") == "online" and (n.get("online-at") or "")[:19] >= sys.argv[2]]
sys.exit(0 if len(fresh) >= int(sys.argv[1]) else 1)' "$1" "$2"
}
link_up() { flwr_op supernode ls fedpeft --format json >/dev/null 2>&1; }
trained() {  # trained NAME N: NAME's log shows N train messages received
    [ "$(pm logs "fedpeft-drill-$1" 2>&1 | grep -c 'Receiving: train message' || true)" -ge "$2" ]
}
refused() { pm logs "fedpeft-drill-$1" 2>&1 | grep -q "Failed to initialize the connection"; }
is_aarch64() { [ "$(pm exec "fedpeft-drill-$1" uname -m)" = aarch64 ]; }
run_listed() {  # run_listed RUN: `flwr ls` lists the run
    flwr_op ls fedpeft --format json 2>/dev/null | python3 -c \
        'import json,sys; sys.exit(0 if any(r.get("run-id")==sys.argv[1] for r in json.load(sys.stdin).get("runs",[])) else 1)' "$1"
}

prepare() {
    rm -rf "$work"/{certs,keys,state,outputs,weights,data,operator,app,commands.txt}
    mkdir -p "$work"/{state,outputs,weights,data/supernode-1,data/supernode-2,operator,app}
    "$root/deploy/certs.sh" "$work/certs" superlink localhost 127.0.0.1 >/dev/null 2>&1
    for key in supernode-1 supernode-2 rogue; do
        "$root/deploy/node-keys.sh" "$work/keys" "$key" >/dev/null 2>&1
    done
    # the containers run as uid 49999 (Flower's images' user)
    chown 49999:49999 "$work"/{state,outputs,weights,operator} "$work/certs/server.key" "$work"/keys/*
    cat >"$work/operator/config.toml" <<EOF
[superlink]
default = "fedpeft"

[superlink.fedpeft]
address = "127.0.0.1:8000"
root-certificates = "/op/ca.crt"
EOF
    # what the FAB holds ([tool.flwr.app] fab-include)
    cp -r "$root"/{pyproject.toml,README.md,fedpeft,client_app,server_app,peft_strategies,conf} "$work/app/"
    log "the bundled ViT-S/14 as a weights file, and supernode-2's own images (sklearn digits)"
    pm run --rm --name fedpeft-drill-operator --network none -v "$work/weights:/out" \
        --entrypoint python "$APP_IMAGE" -m fedpeft.tools.deploy.weights /out/backbone.safetensors >/dev/null
    pm run --rm --name fedpeft-drill-operator --network none --user 0 \
        -v "$work/data/supernode-2:/out" --entrypoint python "$APP_IMAGE" -c '
import numpy as np, os
from PIL import Image
from sklearn.datasets import load_digits
d = load_digits()
for i in range(200):
    folder = f"/out/{int(d.target[i])}"
    os.makedirs(folder, exist_ok=True)
    Image.fromarray((d.images[i] * (255 / 16)).astype(np.uint8)).save(f"{folder}/{i}.png")
'
}

submit() {  # submit LOGFILE RUN_CONFIG: flwr run --stream in the background; sets RUN_PID
    flwr_op run /src fedpeft --stream --run-config "$2" >"$1" 2>&1 &
    RUN_PID=$!
}

finish() {  # finish LOGFILE: wait for `flwr run --stream` to end; sets RUN_ID (empty: none)
    wait "$RUN_PID" || true
    RUN_ID=$(sed -n 's/.*Successfully started run \([0-9]*\).*/\1/p' "$1" | head -n1)
}

metrics_ok() {  # metrics_ok RUN ROUNDS: metrics.json complete, every round aggregated
    python3 - "$work/outputs/$1/metrics.json" "$2" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
rounds = [r for r in m["rounds"] if r["round"] > 0]
print(f"  {sys.argv[1]}: status {m.get('status')}, accuracy {m.get('final_accuracy')}, "
      + ", ".join(f"round {r['round']}: {r['accepted']} replies" for r in rounds))
sys.exit(0 if len(rounds) == int(sys.argv[2]) and all(r["accepted"] >= 1 for r in rounds) else 1)
PY
}

round_replies() {  # round_replies RUN ROUND N: round ROUND aggregated N replies
    python3 -c 'import json,sys; m=json.load(open(sys.argv[1])); r=[r for r in m["rounds"] if r["round"]==int(sys.argv[2])]; sys.exit(0 if r and r[0]["accepted"]==int(sys.argv[3]) else 1)' \
        "$work/outputs/$1/metrics.json" "$2" "$3"
}

message_seconds() {  # message_seconds NAME: seconds from each "Receiving" to the next "Sent"
    pm logs -t "fedpeft-drill-$1" 2>&1 | python3 -c '
import re, sys
from datetime import datetime
start, out = None, []
for line in sys.stdin:
    m = re.match(r"(\S+)\s", line)
    if not m:
        continue
    t = datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", m.group(1)).replace("Z", "+00:00"))
    if "Receiving:" in line and "message" in line:
        start = t
    elif "Sent successfully" in line and start is not None:
        out.append((t - start).total_seconds())
        start = None
print(" ".join(f"{s:.0f}" for s in out) or "none")'
}

phase2() {
    ip link set lo up
    trap cleanup EXIT
    PODMAN_OPTS=()
    local adjustments
    adjustments=$("$root/deploy/container-host.sh" adjust "$BASE_IMAGE") || die "podman cannot run containers"
    eval "$adjustments"
    for name in "${NAMES[@]}" operator; do pm rm -f "fedpeft-drill-$name" >/dev/null 2>&1 || true; done
    check "network namespace has only lo (no traffic leaves 127.0.0.1)" \
        test "$(ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')" = "lo "
    prepare

    log "SuperLink (TLS, node authentication, state on ./state)"
    start superlink superlink "$SUPERLINK_IMAGE"
    wait_for 90 "the SuperLink" link_up || die "SuperLink not up: $(pm logs fedpeft-drill-superlink 2>&1 | tail -5)"
    for node in supernode-1 supernode-2; do
        flwr_op supernode register "/keys/$node.pub" fedpeft >/dev/null || die "registering $node"
    done
    CHECKS+=("ok    SuperLink up with TLS; supernode-1 and supernode-2 keys registered")
    start serverapp serverapp "$APP_IMAGE"
    start supernode-1 supernode-1 "$APP_IMAGE"
    start supernode-2 supernode-2 "$APP_IMAGE"
    check "2 SuperNodes online (TLS + authenticated)" wait_for 120 "2 SuperNodes" online_at_least 2

    log "run 1: 2 rounds; supernode-1 is stopped while it trains round 1, then started again"
    submit "$work/run1.log" "$RUN_CONFIG server.num-rounds=2 server.round-timeout=240.0 output.run-name='drill'"
    wait_for 600 "supernode-1's first train message" trained supernode-1 1 \
        || die "supernode-1 got no train message"
    pm stop -t 20 fedpeft-drill-supernode-1 >/dev/null
    log "supernode-1 stopped mid-round; starting it again in 10 s"
    sleep 10
    pm start fedpeft-drill-supernode-1 >/dev/null
    finish "$work/run1.log"
    local run1=$RUN_ID
    tail -n 3 "$work/run1.log"
    check "run 1 submitted with flwr run (run id ${run1:-none})" test -n "$run1"
    check "metrics.json on the host: 2 rounds, each aggregated" metrics_ok drill 2
    check "the run's tensors on the host (final_trainable.safetensors)" \
        test -s "$work/outputs/drill/final_trainable.safetensors"
    check "supernode-1 rejoined after its restart: trained again (2 train messages in its log)" \
        trained supernode-1 2
    check "round 2 aggregated both SuperNodes (the restarted one included)" round_replies drill 2 2
    check "supernode-2 trained on its own image folder (mounted /app/data) in both rounds" \
        trained supernode-2 2

    log "an unregistered SuperNode (supernode-1's command, an unregistered key)"
    # (on its own port: the containers share one network)
    start supernode-1 rogue "$APP_IMAGE" --no-restart --secret-file "supernode-1-key=$work/keys/rogue" \
        --replace-flag=--port=9099
    check "unregistered SuperNode refused" wait_for 90 "the refusal" refused rogue
    check "still 2 SuperNodes online" test "$(nodes_online)" = 2
    pm rm -f -t 3 fedpeft-drill-rogue >/dev/null

    log "SuperLink container restarted on its state volume"
    pm restart -t 10 fedpeft-drill-superlink >/dev/null
    wait_for 90 "the SuperLink" link_up || die "SuperLink not back"
    check "run $run1 still listed after the SuperLink restart (with-state.yml)" run_listed "$run1"
    # A SuperNode counts as offline once it misses 2 heartbeats (30 s apart): both still
    # online 75 s after the restart means their heartbeats reach the restarted SuperLink.
    sleep 75
    check "both SuperNodes still online 75 s after the SuperLink restart (heartbeats reach it)" \
        online_at_least 2

    if [ "$ARM64" = 1 ] && [ -e "$work/arm64-build-failed" ]; then
        check "the linux/arm64 image built (log: $work/build-${ARM64_IMAGE##*/}.log)" false
    elif [ "$ARM64" = 1 ]; then
        log "arm64: supernode-2 from the linux/arm64 image (emulated by qemu-user-static)"
        pm rm -f -t 10 fedpeft-drill-supernode-2 >/dev/null
        # Emulated, a training message on its 200 images (7 steps of up to 32) outlasted a
        # 20-minute round (qemu-user translates torch's aarch64 kernels; 2026-12-08, EPYC):
        # the arm64 device keeps ARM64_IMAGES images of each class, one short step
        for class_dir in "$work"/data/supernode-2/*/; do
            find "$class_dir" -name '*.png' | sort | tail -n +"$((ARM64_IMAGES + 1))" | xargs -r rm -f
        done
        local swapped
        swapped=$(date -u '+%F %T')
        start supernode-2 supernode-2 "$ARM64_IMAGE"
        check "the arm64 SuperNode is aarch64 (under emulation)" is_aarch64 supernode-2
        check "arm64 SuperNode online beside the amd64 one" wait_for 300 "the arm64 SuperNode" \
            online_since 1 "$swapped"
        wait_for 60 "2 SuperNodes" online_at_least 2 || true
        # emulated training is slow: a generous round timeout
        submit "$work/run2.log" "$RUN_CONFIG server.num-rounds=1 server.round-timeout=1200.0 \
output.run-name='drill-arm64'"
        finish "$work/run2.log"
        check "run 2 (1 round, arm64 + amd64 SuperNodes) aggregated both" round_replies drill-arm64 1 2
        echo "  per message, Receiving -> Sent (s): amd64 supernode-1: $(message_seconds supernode-1)" \
            "| arm64 supernode-2 (emulated): $(message_seconds supernode-2)" | tee -a "$work/measured.txt"
        for image in "$APP_IMAGE" "$ARM64_IMAGE"; do
            local t0
            t0=$(date +%s%N)
            pm run --rm --name fedpeft-drill-operator --network none --entrypoint python "$image" \
                -c "import torch, timm, peft, flwr, client_app.app" >/dev/null 2>&1
            echo "  ClientApp imports (torch, timm, peft, flwr, the app) in $image:" \
                "$((($(date +%s%N) - t0) / 1000000)) ms" | tee -a "$work/measured.txt"
        done
    fi
}

if [ "${DRILL_PHASE:-1}" = 2 ]; then phase2; else phase1 "$@"; fi
