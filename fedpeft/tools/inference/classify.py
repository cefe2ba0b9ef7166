"""An exported model and the inputs it takes: class probabilities of PIL images.

Each image becomes the model's input as a run's images do: stored as a uint8 square
at most the model's size (:func:`fedpeft.data.tensors.to_uint8`, greyscale kept as
one channel), then :class:`fedpeft.data.batches.BatchPipeline` (resize to the model's
size, grey → three channels, standardise with the model's mean and std), in fp32.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

from ...data.batches import BatchPipeline
from ...data.tensors import to_uint8
from ...device import resolve_device
from ..export import ModelInfo, load, read_info


@dataclass
class Classifier:
    """An exported model on a device, with its description and input pipeline."""

    model: nn.Module
    info: ModelInfo
    pipeline: BatchPipeline

    @classmethod
    def open(cls, folder: str | Path, device: str = "cpu") -> Classifier:
        """Load the model exported to ``folder`` onto ``device`` (``cpu``, ``auto``, ``cuda``)."""
        where = resolve_device(device, "--device")
        info = read_info(Path(folder))
        model = load(folder).to(where)
        return cls(model, info, BatchPipeline(info.img_size, tuple(info.mean),
                                              tuple(info.std), where))  # fmt: skip

    def inputs(self, images: list[Image.Image]) -> torch.Tensor:
        """The model inputs of ``images``, each prepared on its own (``N×3×S×S``, S = size)."""
        size = self.info.img_size
        return torch.cat([self.pipeline(torch.from_numpy(to_uint8([img], size)))
                          for img in images])  # fmt: skip

    @torch.inference_mode()
    def probabilities(self, images: list[Image.Image], batch_size: int = 64) -> torch.Tensor:
        """Softmax class probabilities (``N×C``, on the CPU) of ``images``."""
        out = [torch.zeros(0, self.info.num_classes)]
        for start in range(0, len(images), batch_size):
            x = self.inputs(images[start : start + batch_size])
            out.append(self.model(x).float().softmax(dim=1).cpu())
        return torch.cat(out)


def positive(text: str) -> int:
    """An argparse type: an integer >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be an integer >= 1")
    return int(text)


def model_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments ``fedpeft-predict`` and ``fedpeft-evaluate`` share.

    Which exported model, the batch size (an integer >= 1) and the device.
    """
    p.add_argument("model_dir", type=Path, help="a model folder written by fedpeft-export")
    p.add_argument("--batch-size", type=positive, default=64)
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps")
    return p
