"""PEFT methods for timm ViTs, one file each, registered by name.

Adding a method: write ``peft_strategies/<name>.py`` with a ``@register``-ed
:class:`~peft_strategies.base.PeftMethod` subclass and add it to the import
line below.
"""

from . import adapter, bias, full, head, lora, prompt  # noqa: F401  (registration)
from .base import MethodConfig, PeftMethod, ViTDims, count_trainable
from .registry import get_method, method_names, register

__all__ = [
    "MethodConfig",
    "PeftMethod",
    "ViTDims",
    "count_trainable",
    "get_method",
    "method_names",
    "register",
]
