"""Using what a run produced: a standalone model from a run folder, and loading it back.

* :mod:`.run_files`: which trainable-tensors file ``--round best|final|N`` reads.
* :mod:`.writer`: the run's global model, folded by its PEFT method, written as one
  safetensors file plus ``fedpeft_model.json`` (``fedpeft-export``, :mod:`.cli`).
* :mod:`.info`: ``fedpeft_model.json``.
* :mod:`.loader`: :func:`load`, the model again without pretrained weights.
"""

from .info import ModelInfo, read_info
from .loader import load

__all__ = ["ModelInfo", "load", "read_info"]
