"""The sweep report's accuracy-vs-ε figure: a panel per DP mode, a mean point per setting."""

from __future__ import annotations

import pytest

from fedpeft.tools.report import plot_epsilon, plt


def _row(mode: str, setting: str, method: str, eps: float, acc: float) -> dict:
    return {"dp_mode": mode, "setting": setting, "method": method, "epsilon": eps,
            "final_accuracy": acc}  # fmt: skip


def test_local_and_central_get_their_own_panel_and_a_mean_point_per_setting():
    # Prepare: two seeds per setting; central ε per client, local ε per image; a run
    # without DP
    rows = [_row("local", "eps10", "lora", 9.0, 0.6), _row("local", "eps10", "lora", 11.0, 0.8),
            _row("local", "eps2", "lora", 2.0, 0.3), _row("local", "eps2", "lora", 2.0, 0.5),
            _row("central", "c50", "lora", 50.0, 0.2), _row("central", "c5", "lora", 5.0, 0.1),
            {**_row("none", "iid", "lora", 0.0, 0.9), "epsilon": None}]  # fmt: skip
    # Execute
    fig = plot_epsilon(rows)
    # Assert: panels central then local; the local line at each setting's largest ε (what
    # its seeds spent at most, as the table), in order
    central, local = fig.axes
    assert "central DP" in central.get_title() and "local DP" in local.get_title()
    (bars,) = local.containers  # one errorbar series per method
    line = bars.lines[0]
    assert list(line.get_xdata()) == [2.0, 11.0]
    assert list(line.get_ydata()) == pytest.approx([0.4, 0.7])
    assert list(central.containers[0].lines[0].get_xdata()) == [5.0, 50.0]
    # the measured ε label the axis, and only they (no overlapping minor-tick labels)
    assert [t.get_text() for t in local.get_xticklabels()] == ["2", "11"]
    assert not any(t.get_text() for t in local.get_xticklabels(minor=True))
    plt.close(fig)


def test_no_dp_run_no_figure():
    # Execute / Assert
    assert plot_epsilon([{**_row("none", "iid", "lora", 0.0, 0.9), "epsilon": None}]) is None


def test_failed_runs_are_named_in_their_modes_panel():
    # Prepare: central DP with adapter completed and every LoRA run failed; one local
    # DP run failed too
    rows = [_row("central", "c5", "adapter", 5.0, 0.1), _row("local", "l5", "lora", 5.0, 0.3)]
    failed = [{"dp_mode": "central", "method": "lora", "setting": s, "seed": 1}
              for s in ("c5", "c50")] + [{"dp_mode": "local", "method": "head",
                                          "setting": "l5", "seed": 2}]  # fmt: skip
    # Execute
    fig = plot_epsilon(rows, failed)
    # Assert: each panel names its own failures, with their count
    central, local = fig.axes
    assert [t.get_text() for t in central.texts] == ["failed, not plotted: lora (2 runs)"]
    assert [t.get_text() for t in local.texts] == ["failed, not plotted: head (1 run)"]
    plt.close(fig)
