"""uint8 images at their stored size → the model's input, per batch, on the training device.

The batch travels to the device as uint8 (4× fewer bytes than float; pinned and
non-blocking to a GPU), is augmented there at its stored size (``train.augment``),
resized to the model's resolution (bicubic, antialiased when it shrinks, clamped to
[0, 255] as PIL's uint8 resize is), expanded to three channels if greyscale and
standardised with the backbone's mean and std. Augmentations draw from the seeded
CPU generator, so a client's round is reproducible on any device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..registry import Registry


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; to a GPU from pinned memory without blocking the host.

    A copy from pageable memory makes the host wait for the GPU's queue to drain (a
    synchronisation every step); pinned memory comes from torch's caching host
    allocator, which reuses a block only once the copy that read it has finished.
    """
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
AUGMENTATIONS: Registry[Augment | None] = Registry("augmentation")
AUGMENTATIONS.add("none", None)


def _flip_mask(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return to_device(torch.rand(n, generator=generator) < 0.5, device).view(-1, 1, 1, 1)


@AUGMENTATIONS.register("flip")
def flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 1/2."""
    return torch.where(_flip_mask(len(x), generator, x.device), x.flip(-1), x)


@AUGMENTATIONS.register("crop-flip")
def crop_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random crop of the image padded by 1/8 of its side (reflected), then :func:`flip`.

    The CIFAR recipe (pad 4 at 32 px), at the stored size; one offset per image.
    """
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = to_device(torch.randint(0, 2 * pad + 1, (n,), generator=generator), x.device)
    dx = to_device(torch.randint(0, 2 * pad + 1, (n,), generator=generator), x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return flip(padded[batch, chans, rows, cols], generator)


class BatchPipeline:
    """Turns stored uint8 batches into model inputs on ``device`` (see the module doc)."""

    def __init__(
        self,
        size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
        augment: str = "none",
    ) -> None:
        self.size = size
        self.device = device
        self.augment = AUGMENTATIONS.get(augment, "train.augment")
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Model input of a ``B×C×S×S`` uint8 batch (augmented when a generator is given)."""
        x = to_device(images, self.device).float()
        if self.augment is not None and generator is not None:
            x = self.augment(x, generator)
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            shrink = x.shape[-1] > self.size
            x = F.interpolate(x, size=(self.size, self.size), mode="bicubic",
                              align_corners=False, antialias=shrink).clamp_(0.0, 255.0)  # fmt: skip
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x / 255.0 - self.mean) / self.std
