"""How far each dataset is from the backbone's pretraining: the paper's Figure 4, as numbers.

    .venv/bin/python -m benchmarks.domain_gap --seeds 1 2 3 \\
        --out docs/results/domain-gap.json --plot docs/plots/domain-gap.png

Per built-in dataset and seed, the frozen-feature linear probe (:mod:`benchmarks.linear_probe`:
the backbone's pooled features of the training pool, a logistic regression picked by
5-fold cross-validation on them, scored on the test split) twice: with the offline
pretrained ViT-S/14 and with the same architecture randomly initialised
(``model.weights='random'``, seeded). Two measures of the gap:

* ``gain``: pretrained minus random probe accuracy, in points. What pretraining buys on
  this data; near zero when the pretrained features are no better than random ones.
* ``gain_of_headroom``: that gain over what the random backbone leaves to gain
  (1 − random accuracy): comparable across datasets whose random baselines differ.

A larger domain gap shows as a smaller gain. The setting is the sweep's (``--config``):
both datasets at the same image size and training-pool cap.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path

from .linear_probe import run
from .plain_loop import app_config

log = logging.getLogger("benchmarks.domain_gap")
DATASETS = {
    "fashion-mnist": "data.dataset='fashion-mnist'",
    "elpv": "data.dataset='elpv' data.elpv.task='defect'",
}
WEIGHTS = ("offline", "random")


def measure(config: list[str], datasets: list[str], seeds: list[int]) -> dict:
    """Probe accuracies per dataset, weights and seed, and the two gap measures."""
    out: dict = {"config": config, "datasets": {}}
    for name in datasets:
        acc = {w: [] for w in WEIGHTS}
        for seed in seeds:
            for weights in WEIGHTS:
                cfg = app_config([*config, DATASETS[name], f"model.weights='{weights}' "
                                  f"peft.method='head' seed={seed}"])  # fmt: skip
                result = run(cfg, [cfg.data.test_size])
                acc[weights].append(next(iter(result["test"].values()))["accuracy"])
                log.info("%s seed %d %s: %.4f", name, seed, weights, acc[weights][-1])
        gains = [p - r for p, r in zip(acc["offline"], acc["random"], strict=True)]
        headroom = [g / (1 - r) if r < 1 else 0.0
                    for g, r in zip(gains, acc["random"], strict=True)]  # fmt: skip
        series = {"pretrained": acc["offline"], "random": acc["random"], "gain": gains,
                  "gain_of_headroom": headroom}  # fmt: skip
        out["datasets"][name] = {
            "seeds": seeds,
            **series,
            "mean": {k: statistics.fmean(v) for k, v in series.items()},
        }
    return out


def plot(result: dict, path: Path) -> None:
    """Bars: probe accuracy with pretrained and random weights per dataset (mean, sd)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["datasets"])
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for i, weights in enumerate(("pretrained", "random")):
        values = [result["datasets"][n][weights] for n in names]
        means = [statistics.fmean(v) for v in values]
        sds = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
        ax.bar([j + 0.38 * i for j in range(len(names))], means, 0.36, yerr=sds,
               label=f"{weights} ViT-S/14", capsize=3)  # fmt: skip
    for j, n in enumerate(names):
        gain = result["datasets"][n]["mean"]["gain"]
        ax.annotate(f"+{gain * 100:.1f} pts", (j + 0.19, 1.0), ha="center", va="bottom")
    ax.set_xticks([j + 0.19 for j in range(len(names))], names)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("linear-probe test accuracy")
    ax.set_title("Domain gap: what pretraining buys the frozen features")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    """Measure, write the JSON, draw the figure."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-c", "--config", action="append", default=[],
                   help="run-config overrides or presets shared by every probe")  # fmt: skip
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--plot", type=Path, default=None)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = measure(args.config, args.datasets, args.seeds)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
