"""Threshold-free and class-balanced scores of a classifier's test-split predictions.

Accuracy alone misleads on an imbalanced task: on ELPV's defect task (31 % defective)
a model that predicts one class everywhere scores 0.688 or 0.312, and a model whose
scores rank the cells well but sit on the wrong side of 0.5 scores the same. The
balanced accuracy (mean recall over the classes present) names the first; the ROC
AUC (of the positive class's score for two classes, the mean of one-vs-rest AUCs for
more) measures the ranking whatever the threshold. Both are scikit-learn's; the score
they rank, each class's log-odds from the logits (:func:`ovr_log_odds`), is written
here because probabilities saturate to ties in float32.
"""

from __future__ import annotations

import math

import numpy as np
import torch

# scikit-learn is imported in the two functions below, not here: importing
# sklearn.metrics takes seconds, and only the server's evaluation asks for these
# scores, so a ClientApp process never pays for it.


def ovr_log_odds(logits: torch.Tensor) -> torch.Tensor:
    """Each class's log-odds against the rest, ``log p_c − log(1 − p_c)``, from logits.

    The ranking score the AUC needs: monotone in ``p_c``, but it does not saturate where
    the probabilities do (two logits 40 apart give p = 1.0 in float32, so every image
    would tie). ``l_c − logsumexp_{j≠c} l_j``, computed without forming the C × C
    exclusions: for a class below the row's maximum the sum of the others keeps the
    maximum's term (≥ 1 after shifting), so the subtraction loses nothing; the row's
    top class takes the logsumexp of the rest directly. Two classes: ``l_1 − l_0``.
    """
    top, where = logits.max(1, keepdim=True)
    shifted = torch.exp(logits - top)
    rest = torch.log(shifted.sum(1, keepdim=True) - shifted) + top
    others = logits.scatter(1, where, -math.inf)
    rest = rest.scatter(1, where, torch.logsumexp(others, 1, keepdim=True))
    return logits - rest


def balanced_accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean per-class recall of ``scores``' argmax over the classes in ``labels``.

    ``scores``: N × classes (probabilities, logits or :func:`ovr_log_odds`). NaN when
    empty or not finite.
    """
    from sklearn.metrics import balanced_accuracy_score

    if not len(labels) or not np.isfinite(scores).all():
        return math.nan
    return float(balanced_accuracy_score(labels, scores.argmax(1)))


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of ``scores`` for ``labels``.

    ``scores``: N × classes, each column monotone in its class's probability
    (:func:`ovr_log_odds`, or the probabilities themselves). Two classes: the AUC of
    class 1's column. More: the unweighted mean of the one-vs-rest AUCs over the classes
    present (scikit-learn's ``multi_class="ovr"`` needs every class present, which a
    small test split need not have). NaN when it is undefined: fewer than two classes
    present, or non-finite scores (a diverged model).
    """
    from sklearn.metrics import roc_auc_score

    present = np.unique(labels)
    if len(present) < 2 or not np.isfinite(scores).all():
        return math.nan
    if scores.shape[1] == 2:
        return float(roc_auc_score(labels, scores[:, 1]))
    return float(np.mean([roc_auc_score(labels == c, scores[:, c]) for c in present]))
