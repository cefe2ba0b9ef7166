"""TensorBoard event files of a run (``output.tensorboard``): one scalar per round per tag.

The recorder hands each recorded round to :class:`EventWriter`, which writes the
round's server accuracy, loss, balanced accuracy and AUC, the cumulative bytes down
and up, the reply counts, the round's wall time, the learning rate sent and (with DP)
ε spent so far under ``<run dir>/tb/`` with torch's ``SummaryWriter`` (the tensorboard
package's event files). ``tensorboard --logdir <results>`` then shows every run folder under
``<results>`` side by side. A resumed run purges the events of the rounds it repeats.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fedpeft.record import RoundRecord

log = logging.getLogger(__name__)

TB_DIR = "tb"


def scalars(rows: list[RoundRecord]) -> dict[str, float]:
    """The tags and values of the last of ``rows``; bytes are summed over all of them."""
    row = rows[-1]
    out = {
        "server/accuracy": row.accuracy,
        "server/loss": row.loss,
        "bytes/cumulative_down": sum(r.bytes_down for r in rows),
        "bytes/cumulative_up": sum(r.bytes_up for r in rows),
        "replies/accepted": row.accepted,
        "replies/rejected": row.rejected,
        "replies/failed": row.failed,
        "replies/no_reply": row.no_reply,
        "time/round_seconds": row.wall_seconds,
    }
    if row.lr is not None:
        out["train/lr"] = row.lr
    if row.epsilon is not None:
        out["dp/epsilon"] = row.epsilon
    if row.balanced_accuracy is not None:  # None where not evaluated
        out["server/balanced_accuracy"] = row.balanced_accuracy
        out["server/auc"] = row.auc
    if row.client_accuracy is not None:  # server.fraction-evaluate: personalised where local
        out["clients/accuracy"] = row.client_accuracy
        out["clients/loss"] = row.client_loss
    if not row.evaluated:  # server.evaluate-every skipped this round
        del out["server/accuracy"], out["server/loss"]
    return {tag: float(value) for tag, value in out.items()}


class EventWriter:
    """Writes each round's :func:`scalars` to ``<out_dir>/tb/``, at the round as the step.

    Parameters
    ----------
    out_dir : Path
        The run folder.
    first_round : int
        The first round this writer will write; past round 0 (a resumed run), events a
        killed run left at this round or later are purged when TensorBoard reads them.

    """

    def __init__(self, out_dir: Path, first_round: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imported only when enabled

        self.path = out_dir / TB_DIR
        purge = first_round if first_round > 0 else None
        self._writer = SummaryWriter(log_dir=str(self.path), purge_step=purge)
        log.info("TensorBoard events go to %s", self.path)

    def write(self, rows: list[RoundRecord]) -> None:
        """Write the last of ``rows`` and flush, so a running TensorBoard shows it."""
        step = rows[-1].round
        for tag, value in scalars(rows).items():
            self._writer.add_scalar(tag, value, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()
