#!/usr/bin/env bash
# One short check for a machine with a CUDA GPU (<= 8 min; nothing else needs a GPU).
#
#   bash benchmarks/gpu_check.sh            # writes under $OUT (default outputs/gpu-check)
#
# 1. Per PEFT method: ViT-B/16 at 224 px, batch 64, local-training and evaluation img/s
#    in fp32 and bf16 and peak GPU memory (benchmarks/engine.py "speed"; random weights:
#    the device has no hub access and speed does not depend on the weights). The batches
#    are 28 px uint8 resized to 224 px on the GPU, so the data path is in the figure.
#    The figure to beat on an H200-class GPU: >= 3,000 img/s for LoRA training in bf16.
# 2. A 2-round fedpeft-sim with 8 clients at 0.25 GPU each (4 share the GPU at a time),
#    ViT-B/16 at 224 px on sklearn's digits (bundled: no download).
# Results: $OUT/gpu.txt, $OUT/engine-vitb16-224.json, $OUT/sim/gpu-sim/metrics.json.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT:-outputs/gpu-check}
mkdir -p "$OUT"
VITB="model.name='vit_base_patch16_224' model.weights='random' model.img-size=224"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"

echo "== 1. engine speed per method (ViT-B/16, 224 px, batch 64)"
timeout 330 "$PY" -m benchmarks.engine -c "$VITB train.batch-size=64 train.device='cuda'" \
    --skip head memory --train-images 1920 --eval-images 3840 \
    --out "$OUT/engine-vitb16-224.json"

echo "== 2. fedpeft-sim: 8 clients at 0.25 GPU, 2 rounds"
timeout 240 "$PY" -m fedpeft.launch --num-supernodes 8 --gpus-per-client 0.25 --timeout 200 \
    -c "$VITB data.dataset='digits' data.train-size=0 data.test-size=0 server.num-rounds=2 \
server.fraction-train=1.0 server.min-train-nodes=8 train.batch-size=64 \
output.dir='$OUT/sim' output.run-name='gpu-sim'"
"$PY" - "$OUT" <<'PY'
import json, sys
m = json.load(open(f"{sys.argv[1]}/sim/gpu-sim/metrics.json"))
print("sim:", m["status"], [(r["round"], round(r["accuracy"], 3)) for r in m["rounds"]])
e = json.load(open(f"{sys.argv[1]}/engine-vitb16-224.json"))
for row in e["speed"]:
    b = row["bf16"]
    print(f"{row['method']:8s} bf16 train {b['train_img_s']:7.0f} img/s  eval {b['eval_img_s']:7.0f}"
          f" img/s  peak {b.get('peak_gpu_mib', 0):6.0f} MiB  (x{row['train_ratio']:.2f} vs fp32)")
PY
