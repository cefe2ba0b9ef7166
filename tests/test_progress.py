"""What fedpeft-sim and fedpeft-deploy show of a run: round lines, warnings, errors."""

from __future__ import annotations

import io
import math

import pytest

from fedpeft.progress import (
    RESULTS,
    RunConsole,
    duration,
    eta,
    level,
    parse_round,
    results_dir,
    round_line,
)

FLWR_INFO, FLWR_WARNING = "\x1b[92mINFO \x1b[0m:      ", "\x1b[93mWARNING \x1b[0m:   "
ACTOR = "\x1b[36m(ClientAppActor pid=2265)\x1b[0m "
ROUNDS = [round_line(r, 2, 0.1 + 0.3 * r, 2.0 - 0.5 * r, 1000 * r, 10.0 * r, 10.0 * (2 - r))
          for r in range(3)]  # fmt: skip
# A short run's streamed output as flwr run --stream prints it (flwr 1.42, Ray 2.x)
STREAM = [
    "Using SuperLink: fedpeft-local (127.0.0.1:44105)\n",
    "Successfully started run 1343\n",
    FLWR_INFO + "Starting Flower Simulation\n",
    FLWR_WARNING + "Since flwr 1.32, default simulated SuperNodes changed from 10 to 2.\n",
    FLWR_INFO + "torch uses 1 CPU threads\n",
    FLWR_WARNING + "fraction_evaluate is set to 0.0. Federated evaluation will be skipped.\n",
    FLWR_INFO + RESULTS.format("/tmp/o1/e2e") + "\n",
    FLWR_INFO + ROUNDS[0] + "\n",
    FLWR_INFO + "[ROUND 1/2]\n",
    FLWR_INFO + "round 1: sampled partitions [0, 1, 2]\n",
    ACTOR + FLWR_INFO + "Loading dataset builtin:digits for 3 partitions\n",
    ACTOR + FLWR_WARNING + "partition 2: 3 images, fewer than one batch\n",
    FLWR_INFO + ROUNDS[1] + "\n",
    FLWR_WARNING + "round 1: accuracy 0.4000 is at chance level (0.1000)\n",
    "\x1b[91mERROR \x1b[0m:     ServerApp thread raised an exception: boom\n",
    "Traceback (most recent call last):\n",
    '  File "server_app/app.py", line 1, in main\n',
    "ValueError: boom\n",
    FLWR_INFO + "[ROUND 2/2]\n",
    FLWR_INFO + ROUNDS[2] + "\n",
    FLWR_INFO + "Final server accuracy 0.7000 after 2 rounds; 3,000 bytes in total\n",
    ACTOR + FLWR_WARNING + "Manually terminating ClientAppActor\n",
]


def _shown(verbose: bool, tty: bool = False) -> str:
    out = io.StringIO()
    console = RunConsole(verbose, out, tty=tty)
    for line in STREAM:
        console(line)
    console.close()
    return out.getvalue()


def test_round_line_reads_back():
    # Prepare
    line = round_line(3, 50, 0.81234, 0.5, 1_234_567, 75.0, 3700.0)
    # Execute
    got = parse_round(FLWR_INFO + line)
    # Assert
    assert line == ("round 3/50: accuracy 0.8123, loss 0.5000 | 1,234,567 bytes | "
                    "1m15s elapsed, ETA 1h01m")  # fmt: skip
    assert (got.round, got.rounds, got.accuracy, got.loss, got.cum_bytes) == (
        3, 50, 0.8123, 0.5, 1_234_567,
    )  # fmt: skip
    assert parse_round(FLWR_INFO + "round 1: sampled partitions [0, 1]") is None


def test_a_round_the_server_did_not_evaluate_reads_back_as_nan():
    # Prepare: server.evaluate-every skipped round 4 (the recorder's NaN accuracy and loss)
    line = round_line(4, 20, math.nan, math.nan, 2_000, 10.0, 40.0)
    # Execute
    got = parse_round(FLWR_INFO + line)
    # Assert: a dash, not "nan" (which reads as a diverged loss); NaN again when read
    assert "round 4/20: accuracy -, loss - | 2,000 bytes" in line
    assert math.isnan(got.accuracy) and math.isnan(got.loss) and got.cum_bytes == 2_000


def test_eta_and_duration():
    assert eta(2, 10, 30.0) == 120.0
    assert math.isnan(eta(0, 10, 5.0))
    assert [duration(s) for s in (0.4, 59.6, 61, 3599, 7260, math.nan)] == [
        "0s", "1m00s", "1m01s", "59m59s", "2h01m", "?",
    ]  # fmt: skip


def test_default_shows_rounds_warnings_errors_and_where_results_go():
    # Execute
    shown = _shown(verbose=False).splitlines()
    # Assert: no colours, no Flower/Ray chatter, no per-client INFO, no known noise
    assert shown == [
        RESULTS.format("/tmp/o1/e2e"),
        ROUNDS[0],
        "(ClientAppActor pid=2265) WARNING :   partition 2: 3 images, fewer than one batch",
        ROUNDS[1],
        "WARNING :   round 1: accuracy 0.4000 is at chance level (0.1000)",
        "ERROR :     ServerApp thread raised an exception: boom",
        "Traceback (most recent call last):",
        '  File "server_app/app.py", line 1, in main',
        "ValueError: boom",
        ROUNDS[2],
        "Final server accuracy 0.7000 after 2 rounds; 3,000 bytes in total",
    ]


def test_verbose_shows_every_line_as_it_came():
    assert _shown(verbose=True) == "".join(STREAM)


def test_a_terminal_gets_a_bar_at_the_last_round_and_the_other_lines_above_it():
    # Execute
    shown = _shown(verbose=False, tty=True)
    # Assert: tqdm's bar ends at 2/2 with the last accuracy; the warnings are printed
    assert "2/2" in shown and "accuracy 0.7000, 2,000 bytes" in shown
    assert "WARNING :   round 1: accuracy 0.4000 is at chance level" in shown
    assert ROUNDS[1] not in shown  # round lines become the bar


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (FLWR_WARNING + "x", "WARNING"),
        (ACTOR + FLWR_INFO + "x", "INFO"),
        ("ERROR fedpeft.tools.launch: invalid run config", "ERROR"),
        ("Traceback (most recent call last):", None),
        ("Successfully started run 1", None),
    ],
)
def test_level_of_flower_ray_and_logging_lines(line, expected):
    assert level(line) == expected


def test_results_dir_is_the_folder_the_server_app_named():
    assert str(results_dir("".join(STREAM))) == "/tmp/o1/e2e"
    assert results_dir("Successfully started run 1\n") is None
