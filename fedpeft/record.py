"""The schema of a run's results: one :class:`RoundRecord` per round, one :class:`RunRecord`.

``metrics.json`` is a :class:`RunRecord` (the run's summary plus ``rounds``) and
``metrics.csv`` its rounds' scalar fields (:data:`CSV_FIELDS`). The server's
recorder (:mod:`server_app.recorder`) writes them with :func:`write_run`; the report
and the sweep read them back through :func:`read_run`. Files written before a field
existed read with that field's default; a key the schema does not know is refused, naming it.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from .protocol import DP_EPSILON
from .run_folder import METRICS_CSV, METRICS_JSON


@dataclass
class RoundRecord:
    """One round: the server's evaluation, what travelled, who replied, and DP spent.

    Round 0 is the evaluation of the initial model (nothing sent). Partition labels
    (``"3"``, or ``"node <id>"`` for a node that never said its partition) key the
    per-client fields, because node ids change from run to run.
    """

    round: int
    accuracy: float  # server-side accuracy of the global model on the central test split
    # (NaN, with the loss, in a round server.evaluate-every did not evaluate)
    loss: float = math.nan  # its mean cross-entropy (NaN when the model diverged)
    # fedpeft.metrics, on the same split: mean per-class recall, and the ROC AUC (class 1's
    # log-odds; more classes: mean one-vs-rest). None: not evaluated, or written before
    # they were recorded
    balanced_accuracy: float | None = None
    auc: float | None = None
    clients: int = 0  # clients sampled (messages sent)
    accepted: int = 0  # replies that passed validation and were aggregated
    rejected: int = 0  # replies refused by validation (reasons in ``rejections``)
    failed: int = 0  # error replies (reasons in ``errors``)
    no_reply: int = 0  # sampled clients that never replied before the round's timeout
    bytes_down: int = 0  # serialised bytes sent to clients (all of them)
    bytes_up: int = 0  # serialised bytes received from clients
    theoretical_down: int = 0  # Σ numel × itemsize sent
    theoretical_up: int = 0  # Σ numel × itemsize received
    payload_up: int = 0  # Σ len(Array.data) received (what max-payload-bytes bounds)
    cum_bytes: int = 0  # bytes up + down over all rounds so far
    wall_seconds: float = 0.0  # wall time since the previous round's record
    train_seconds: float = 0.0  # from sending the round to aggregating it
    failed_round: bool = False  # too few valid replies: the global state is unchanged
    diverged: bool = False  # the global model's loss is NaN/Inf
    at_chance: bool = False  # accuracy within 0.02 of 1/num_classes (rounds > 0)
    lr: float | None = None  # the learning rate the server sent this round
    failure: str = ""  # why the round failed
    rejections: dict[str, str] = field(default_factory=dict)  # partition → reason
    errors: dict[str, str] = field(default_factory=dict)  # partition → error reason
    no_reply_partitions: list[str] = field(default_factory=list)
    client_metrics: list[dict[str, Any]] = field(default_factory=list)  # accepted, in order
    weights: dict[str, int] = field(default_factory=dict)  # partition → num-examples
    update_norms: dict[str, float] = field(default_factory=dict)  # partition → ‖reply − sent‖
    global_norm: float | None = None  # ‖sent‖, what the poisoning guard's model bound scales
    # server.fraction-evaluate: the evaluating clients' accuracy and loss on the images they
    # hold out, with their local tensors (personalised: FedSA-LoRA's B, peft.head.local),
    # weighted by their image counts; ``accuracy`` above is the global model's
    client_accuracy: float | None = None
    client_loss: float | None = None
    clients_evaluated: int = 0
    eval_rejections: dict[str, str] = field(default_factory=dict)  # partition → reason
    downlink_ratio: float | None = None  # comm.downlink: bytes_down / the same sent in fp32
    uplink_ratio: float | None = None  # comm.uplink: accepted replies' bytes / same in fp32
    # secagg.enabled: serialised bytes of each SecAgg+ stage, both ways (the masked stage's
    # global arrays included; bytes_down / bytes_up hold the same, summed)
    secagg_bytes: dict[str, int] = field(default_factory=dict)
    dp_epsilon: float | None = None  # central DP: cumulative client-level ε
    dp_delta: float | None = None
    dp_noise_multiplier: float | None = None
    dp_noise_std: float | None = None  # of the released mean
    dp_sample_rate: float | None = None
    dp_clipped: int | None = None  # updates clipped this round
    dp_releases: int | None = None  # noisy aggregates released so far
    dp_epsilon_max: float | None = None  # local DP: the largest client's cumulative ε

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> RoundRecord:
        """Read a row of ``metrics.json`` (any version); unknown keys raise ``ValueError``."""
        unknown = sorted(set(row) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"round record has unknown field(s) {unknown}")
        return cls(**row)

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` row."""
        return dataclasses.asdict(self)

    @property
    def evaluated(self) -> bool:
        """Whether the server evaluated this round (not: server.evaluate-every skipped it)."""
        return not math.isnan(self.accuracy)

    @property
    def epsilon(self) -> float | None:
        """ε spent so far: the server's (central DP) or the largest client's (local DP).

        Rows written without ``dp_epsilon_max`` give the largest ε among this round's
        client reports (their ``dp-epsilon`` metric).
        """
        if self.dp_epsilon is not None:
            return self.dp_epsilon
        if self.dp_epsilon_max is not None:
            return self.dp_epsilon_max
        reported = [float(m[DP_EPSILON]) for m in self.client_metrics if DP_EPSILON in m]
        return max(reported) if reported else None


_SCALARS = (int, float, bool, str, int | None, float | None)
CSV_FIELDS = tuple(name for name, typ in get_type_hints(RoundRecord).items()
                   if typ in _SCALARS and name != "failure")  # fmt: skip


@dataclass
class RunRecord:
    """A run's ``metrics.json``: what was trained and sent, its status, and its rounds."""

    run_id: int = 0
    config: dict[str, Any] = field(default_factory=dict)  # dataclasses.asdict(RunConfig)
    class_names: list[str] = field(default_factory=list)  # by class id; empty: not recorded
    trainable_params: int = 0
    trainable_tensors: int = 0
    bytes_per_transfer: int = 0  # serialised bytes of the trainable set, one client, one way
    theoretical_bytes_per_transfer: int = 0
    wire: dict[str, Any] = field(default_factory=dict)  # each direction's codec, as carried
    # where the server evaluated: {"device": "cpu" | "cuda" | "mps", "precision": "fp32" | ...}
    server_engine: dict[str, str] = field(default_factory=dict)  # empty: not recorded
    resumed_after_round: int = 0
    status: str = "running"  # running | completed | failed
    rounds: list[RoundRecord] = field(default_factory=list)
    final_accuracy: float | None = None
    best_round: int | None = None  # highest server accuracy (the earliest of ties; round 0 counts)
    best_accuracy: float | None = None
    diverged: bool | None = None
    at_chance: bool | None = None
    failed_rounds: int | None = None
    total_bytes: int | None = None
    error: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """Read ``metrics.json`` content (any version); unknown keys raise ``ValueError``."""
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"run record has unknown field(s) {unknown}")
        rounds = [RoundRecord.from_dict(r) for r in data.get("rounds", [])]
        return cls(**{**data, "rounds": rounds})

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` content (summary keys first, then ``rounds``)."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "rounds"}
        out = {k: v for k, v in out.items() if v is not None}  # set when the run ends
        return {**out, "rounds": [r.to_dict() for r in self.rounds]}

    @property
    def epsilon(self) -> float | None:
        """The run's final ε (None without DP)."""
        return self.rounds[-1].epsilon if self.rounds else None


def best_row(rows: list[RoundRecord]) -> RoundRecord | None:
    """The round with the highest finite server accuracy, the earliest of ties."""
    best = None
    for row in rows:
        if row.evaluated and (best is None or row.accuracy > best.accuracy):
            best = row
    return best


def read_run(path: Path) -> RunRecord:
    """Read a ``metrics.json``; the error names the file."""
    try:
        return RunRecord.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


def write_run(run: RunRecord, out_dir: Path) -> None:
    """Write ``out_dir/metrics.json`` and ``out_dir/metrics.csv``, each atomically."""
    tmp = out_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(run.to_dict(), indent=2, default=str))
    os.replace(tmp, out_dir / METRICS_JSON)
    tmp = out_dir / "metrics.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(r.to_dict() for r in run.rounds)
    os.replace(tmp, out_dir / METRICS_CSV)
