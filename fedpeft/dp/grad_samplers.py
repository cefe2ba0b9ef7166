"""Opacus per-sample gradients for this project's own PEFT modules.

Importing this module registers them. The adapter is made of ``nn.Linear``
layers, which Opacus handles, except that Opacus 1.6 hooks a module once per
*path* to it: the shared adapter (one module reached from every block) got
``depth`` sets of hooks and per-sample gradients ``depth`` times too large.
:class:`SharedAwareGradSampleModule` hooks each module once. Deep prompts are
one parameter read by forward pre-hooks, so :class:`DeepPrompts` routes each
insertion through its ``forward(index, scale, x)``, and the sampler below turns
the gradient of that output into the per-sample gradient of the prompt tokens.
Both are checked against micro-batch ground truth in ``tests/test_dp_grad_samples.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from opacus import GradSampleModule
from opacus.grad_sample import register_grad_sampler
from torch import nn

from peft_strategies.prompt import DeepPrompts


@register_grad_sampler(DeepPrompts)
def prompt_grad_sample(
    layer: DeepPrompts, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[torch.nn.Parameter, torch.Tensor]:
    """Per-sample gradient of ``layer.tokens`` for one insertion.

    ``activations`` are the forward inputs (index, dropout scale, x);
    ``backprops`` is the per-sample gradient of the output ``B × T × D``. Only
    layer ``index``'s slice receives gradient: the inserted tokens' output
    gradient times the dropout scale (the output is ``tokens[index] · scale``).
    """
    index, scale = int(activations[0]), activations[1]
    prefix, num = layer.prefix, layer.tokens.shape[1]
    grad = torch.zeros(
        (backprops.shape[0], *layer.tokens.shape), dtype=backprops.dtype, device=backprops.device
    )
    grad[:, index] = backprops[:, prefix : prefix + num] * scale.to(backprops.dtype)
    return {layer.tokens: grad}


class SharedAwareGradSampleModule(GradSampleModule):
    """Opacus's GradSampleModule, hooking a module reached by several paths only once."""

    def iterate_submodules(
        self, module: nn.Module, _seen: set[int] | None = None
    ) -> Iterator[nn.Module]:
        """Opacus's traversal with a shared ``seen`` set (each module yielded once)."""
        seen = set() if _seen is None else _seen
        if id(module) in seen:
            return
        seen.add(id(module))
        trainable = any(p.requires_grad for p in module.parameters(recurse=False))
        if trainable:
            yield module
            if type(module) not in self.GRAD_SAMPLERS:
                return  # functorch computes the whole subtree, as in Opacus
        for child in module.children():
            yield from self.iterate_submodules(child, seen)
