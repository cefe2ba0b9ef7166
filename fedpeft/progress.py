"""What a user sees of a run: one progress line per round, warnings and errors.

The ServerApp logs each round as :func:`round_line` (the one line format, parsed back
by :func:`parse_round`). ``fedpeft-sim`` and ``fedpeft-deploy`` pass the run's streamed
output through :class:`RunConsole`: by default it shows the round lines (a ``tqdm``
bar on a terminal, the plain lines otherwise), warnings, errors with their
tracebacks and where the results go; ``--verbose`` shows every line. The launchers
keep the full output in a log file either way, so nothing is lost by the filter.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

# Flower's console lines carry ANSI colours (``\x1b[92mINFO \x1b[0m:``).
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# A record's level as Flower (``WARNING :``) or Python's logging (``WARNING name:``)
# prints it, after an optional Ray prefix (``(ClientAppActor pid=7)``).
_LEVEL = re.compile(r"^(?:\(\S+ pid=\d+\)\s*)?(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b")
_INFO_PREFIX = re.compile(r"^INFO\s*:\s*")  # Flower's, before the ServerApp's own lines
_ROUND = re.compile(
    r"round (?P<round>\d+)/(?P<rounds>\d+): accuracy (?P<accuracy>\S+), loss (?P<loss>\S+) \| "
    r"(?P<cum_bytes>[\d,]+) bytes"
)
NOT_EVALUATED = "-"  # a round line's accuracy and loss when the server did not evaluate
RESULTS = "Results go to {}"  # the ServerApp's line naming the run folder
_RESULTS = re.compile(re.escape(RESULTS).replace(r"\{\}", r"(?P<dir>\S+)"))
_FINAL = "Final server accuracy "
# Notices that do not apply to runs made by these launchers (each says why); dropped
# unless --verbose.
NOISE = (
    # flwr 1.42 warns on every simulation; the launchers always pass num-supernodes.
    "Since flwr 1.32, default simulated SuperNodes changed",
    # FedAvg's base class when server.fraction-evaluate = 0 (the default): the server
    # evaluates centrally every round instead.
    "fraction_evaluate is set to 0.0. Federated evaluation will be skipped.",
    # Flower's Ray backend on every actor it stops when a simulation ends (flwr 1.42
    # simulation/ray_transport/ray_actor.py), printed only if it arrives before Ray's
    # log stream closes.
    "Manually terminating ClientAppActor",
)


def add_verbose_argument(parser: argparse.ArgumentParser, kept_in: str) -> None:
    """``--verbose`` / ``-v`` of a launcher whose whole output is kept in ``kept_in``."""
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="show every line of the run (default: one line per round, warnings, errors; "
        f"the whole output is in {kept_in} either way)",
    )


def setup_cli_logging(verbose: bool) -> None:
    """A launcher's own log records: DEBUG with ``--verbose``, else INFO."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip


def duration(seconds: float) -> str:
    """``75`` → ``1m15s``; ``3700`` → ``1h01m``; ``nan`` → ``?``."""
    if not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def eta(done: int, total: int, elapsed: float) -> float:
    """Seconds left when ``done`` of ``total`` equal steps took ``elapsed`` (nan if 0)."""
    return elapsed / done * (total - done) if done > 0 else math.nan


def round_line(server_round: int, num_rounds: int, accuracy: float, loss: float,
               cum_bytes: int, elapsed: float, left: float, ratios: str = "") -> str:  # fmt: skip
    """The one line the ServerApp logs per round (what :func:`parse_round` reads).

    ``ratios`` (e.g. ``"up 0.26×, down 0.50× fp32"``) follows the bytes when a codec
    encodes the arrays.
    """
    wire = f" ({ratios})" if ratios else ""
    if math.isnan(accuracy):  # not evaluated (server.evaluate-every)
        acc = lss = NOT_EVALUATED
    else:
        acc, lss = f"{accuracy:.4f}", f"{loss:.4f}"
    return (
        f"round {server_round}/{num_rounds}: accuracy {acc}, loss {lss} | "
        f"{cum_bytes:,} bytes{wire} | {duration(elapsed)} elapsed, ETA {duration(left)}"
    )


@dataclass(frozen=True)
class RoundProgress:
    """A round line read back."""

    round: int
    rounds: int
    accuracy: float
    loss: float
    cum_bytes: int


def clean(line: str) -> str:
    """``line`` without ANSI colours and trailing whitespace."""
    return _ANSI.sub("", line).rstrip()


def parse_round(line: str) -> RoundProgress | None:
    """The round line in ``line`` (coloured or not), or ``None``."""
    match = _ROUND.search(clean(line))
    if match is None:
        return None
    g = match.groupdict()
    acc, loss = (math.nan if g[k] == NOT_EVALUATED else float(g[k]) for k in ("accuracy", "loss"))
    return RoundProgress(int(g["round"]), int(g["rounds"]), acc, loss,
                         int(g["cum_bytes"].replace(",", "")))  # fmt: skip


def results_dir(output: str) -> Path | None:
    """The run folder the ServerApp named in ``output`` (``None``: it never got there)."""
    match = _RESULTS.search(clean(output))
    return Path(match.group("dir")) if match else None


def level(line: str) -> str | None:
    """The log level ``line`` was printed at (``None``: not a log record)."""
    match = _LEVEL.match(clean(line))
    return match.group(1) if match else None


class RunConsole:
    """Shows a run's streamed output on ``out``: everything (``verbose``) or the summary.

    Call it with each line as it arrives, then :meth:`close`. The summary: round lines
    (a ``tqdm`` bar when ``out`` is a terminal: round k/N, accuracy, bytes, elapsed and
    ETA), warnings, errors and the lines that follow them up to the next record (a
    traceback), and where the results go. ``tty`` defaults to ``out.isatty()``.
    """

    def __init__(self, verbose: bool = False, out: TextIO | None = None,
                 tty: bool | None = None) -> None:  # fmt: skip
        self.verbose = verbose
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self._bar = None  # a tqdm bar once the first round line arrives (terminal only)
        self._in_error = False  # inside an error's following lines (its traceback)

    def __call__(self, line: str) -> None:
        if self.verbose:
            self._write(line.rstrip("\n"))
            return
        text = clean(line)
        progress = parse_round(text)
        if progress is not None:
            self._in_error = False
            self._round(progress, text)
            return
        lvl = level(text)
        if lvl is not None:
            self._in_error = lvl in ("ERROR", "CRITICAL")
        elif text.startswith("Traceback (most recent call last)"):
            self._in_error = True
        if any(noise in text for noise in NOISE):
            return
        if lvl in ("WARNING", "ERROR", "CRITICAL") or self._in_error:
            self._write(text)
        elif _RESULTS.search(text) or _FINAL in text:
            self._write(_INFO_PREFIX.sub("", text))

    def _round(self, progress: RoundProgress, text: str) -> None:
        if not self.tty:
            self._write(text[text.index("round ") :])
            return
        from tqdm import tqdm  # only on a terminal

        if self._bar is None:
            # a resumed run's first line is its first round after the checkpoint's
            self._bar = tqdm(total=progress.rounds, initial=progress.round, file=self.out,
                             unit="round", dynamic_ncols=True)  # fmt: skip
        if not math.isnan(progress.accuracy):  # else the last evaluated round's stays
            self._bar.set_postfix_str(f"accuracy {progress.accuracy:.4f}, "
                                      f"{progress.cum_bytes:,} bytes", refresh=False)  # fmt: skip
        self._bar.update(progress.round - self._bar.n)

    def _write(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=self.out)
        else:
            self.out.write(text + "\n")
            self.out.flush()

    def __enter__(self) -> RunConsole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the bar (if one was drawn)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
