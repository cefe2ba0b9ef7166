"""A node's decoded training tensors on disk, for processes that live one message.

In deployment every message starts a fresh ClientApp process, so the
per-process caches of :mod:`fedpeft.data.tensors` never hit. This keeps the
uint8 images and labels of a node's data as safetensors under
``$FEDPEFT_CACHE/data/``, keyed by everything that determines them; the next
message loads them instead of reading, partitioning and resizing the source
again. Opt-in with ``FEDPEFT_DATA_CACHE=1`` (``fedpeft-deploy`` and the
container image set it): a simulation keeps its data in its long-lived
workers and would only fill the disk (one file per client).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..offline_vit import cache_dir
from .tensors import ImageTensors

log = logging.getLogger(__name__)

# Bump when the tensors a key describes change (2: source resolution and channels).
VERSION = 2


def enabled() -> bool:
    """True when ``FEDPEFT_DATA_CACHE=1``."""
    return os.environ.get("FEDPEFT_DATA_CACHE", "0") == "1"


def folder_fingerprint(root: str) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime in ns) of every file under ``root``: changes invalidate."""
    base = Path(root).expanduser()
    return sorted(
        (str(p.relative_to(base)), (st := p.stat()).st_size, st.st_mtime_ns)
        for p in base.rglob("*")
        if p.is_file()
    )


def path_for(key: dict[str, object]) -> Path:
    """Cache file of ``key`` (any JSON-serialisable description of the data)."""
    text = json.dumps({"version": VERSION, **key}, sort_keys=True, default=str)
    return cache_dir() / "data" / f"{hashlib.sha256(text.encode()).hexdigest()[:24]}.safetensors"


def cached(key: dict[str, object], build: Callable[[], ImageTensors]) -> ImageTensors:
    """``build()``'s tensors, from the disk cache when present (written atomically)."""
    if not enabled():
        return build()
    path = path_for(key)
    if path.is_file():
        state = load_file(str(path))
        log.info("Node data: %d images from cache %s", len(state["labels"]), path)
        return ImageTensors(state["images"], state["labels"], int(state["num_classes"]),
                            path.stem)  # fmt: skip
    data = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"images": data.images.contiguous(), "labels": data.labels.contiguous(),
               "num_classes": torch.tensor(data.num_classes)}, str(tmp))  # fmt: skip
    os.replace(tmp, path)
    return data
