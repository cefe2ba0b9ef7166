"""Which of a run folder's trainable-tensor files ``--round`` names, and which round it is.

The ServerApp writes, in the run folder: ``final_trainable.safetensors`` (the global
trainable tensors after the last round), ``best_trainable.safetensors`` (the round
with the best server accuracy) and, with ``output.save-every = N``,
``round_<k>_trainable.safetensors`` every N-th round; each keyed as
:func:`fedpeft.arrays.trainable_state`.
"""

from __future__ import annotations

import re
from pathlib import Path

from safetensors import safe_open

from ... import run_folder
from ...record import RunRecord, best_row
from ...run_folder import round_file

ROUND_CHOICES = ("best", "final")
_ROUND_FILE = re.compile(re.escape(round_file(0)).replace("0", r"(\d+)", 1))


def parse_round(text: str) -> str | int:
    """``--round``: ``best``, ``final`` or a round number >= 0.

    Raises
    ------
    ValueError
        Naming the value and the choices.

    """
    if text in ROUND_CHOICES:
        return text
    if text.isdigit():
        return int(text)
    raise ValueError(f"--round={text!r}: use 'best', 'final' or a round number")


def file_name(choice: str | int) -> str:
    """The file ``--round choice`` reads."""
    return run_folder.trainable_file(choice)


def available(run_dir: Path) -> list[str]:
    """The ``--round`` values this run folder has files for (best, final, then rounds)."""
    names = {p.name for p in run_dir.glob(f"*{run_folder.TRAINABLE_SUFFIX}")}
    found = [c for c in ROUND_CHOICES if file_name(c) in names]
    rounds = sorted(int(m.group(1)) for n in names if (m := _ROUND_FILE.fullmatch(n)))
    return found + [str(r) for r in rounds]


def trainable_file(run_dir: Path, choice: str | int) -> Path:
    """The tensors file of ``--round choice`` in ``run_dir``.

    Raises
    ------
    FileNotFoundError
        If it does not exist: names the path and lists what the run folder has.

    """
    path = run_dir / file_name(choice)
    if not path.is_file():
        have = available(run_dir)
        listing = ", ".join(f"{c} ({file_name(parse_round(c))})" for c in have) or "none"
        raise FileNotFoundError(
            f"--round {choice}: {path} does not exist; this run folder has: {listing}"
        )
    return path


def _recorded_round(path: Path) -> int | None:
    """The round a tensors file says it holds (its safetensors metadata), if any."""
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
    value = meta.get("round", meta.get("server_round"))
    return int(value) if value is not None and str(value).isdigit() else None


def exported_round(record: RunRecord, choice: str | int, path: Path) -> int | None:
    """The round number behind ``choice``.

    A number is itself; otherwise the file's own metadata where it has a round, else
    ``metrics.json``: ``final`` is the last recorded round, ``best`` its ``best_round``
    or, in a record without one, :func:`fedpeft.record.best_row` (the recorder's rule).
    ``None`` when the record has no rounds.
    """
    if isinstance(choice, int):
        return choice
    recorded = _recorded_round(path)
    if recorded is not None:
        return recorded
    if choice == "final":
        return record.rounds[-1].round if record.rounds else None
    if record.best_round is not None:
        return record.best_round
    best = best_row(record.rounds)
    return best.round if best is not None else None


def round_accuracy(record: RunRecord, server_round: int | None) -> float | None:
    """The server accuracy ``metrics.json`` recorded for ``server_round`` (None: none)."""
    for row in record.rounds:
        if row.round == server_round:
            return row.accuracy
    return None
