"""The names of the files in a run folder, defined once.

The ServerApp writes them (:mod:`server_app.recorder`, :mod:`server_app.checkpoint`),
the launcher the log, and the report, sweep, rescore and export tools read them.
"""

from __future__ import annotations

METRICS_JSON = "metrics.json"  # the run record (fedpeft.record)
METRICS_CSV = "metrics.csv"  # one row per round
RUN_LOG = "run.log"  # the run's whole output (fedpeft.tools.launch)
CHECKPOINT = "checkpoint.safetensors"
FINAL_TRAINABLE = "final_trainable.safetensors"  # the global trainable tensors at the end
BEST_TRAINABLE = "best_trainable.safetensors"  # the best round's
CURVES = "curves.png"  # accuracy and bytes by round (fedpeft.curves)
TRAINABLE_SUFFIX = "_trainable.safetensors"


def round_file(server_round: int) -> str:
    """The name ``output.save-every`` keeps round ``server_round``'s tensors under."""
    return f"round_{server_round}{TRAINABLE_SUFFIX}"


def trainable_file(choice: str | int) -> str:
    """The tensors file of ``best``, ``final`` or a round number."""
    return round_file(choice) if isinstance(choice, int) else f"{choice}{TRAINABLE_SUFFIX}"
