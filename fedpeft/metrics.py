"""Threshold-free and class-balanced scores of a classifier's test-split predictions.

Accuracy alone misleads on an imbalanced task: on ELPV's defect task (31 % defective)
a model that predicts one class everywhere scores 0.688 or 0.312, and a model whose
scores rank the cells well but sit on the wrong side of 0.5 scores the same. The
balanced accuracy (mean recall over the classes present) names the first; the ROC
AUC (the positive class's probability for two classes, the mean of one-vs-rest AUCs
for more) measures the ranking whatever the threshold. Both are scikit-learn's.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import balanced_accuracy_score, roc_auc_score


def balanced_accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    """Mean per-class recall of the argmax over the classes in ``labels``; NaN if empty."""
    if not len(labels) or not np.isfinite(probs).all():
        return math.nan
    return float(balanced_accuracy_score(labels, probs.argmax(1)))


def auc(labels: np.ndarray, probs: np.ndarray) -> float:
    """ROC AUC of ``probs`` (N × classes) for ``labels``.

    Two classes: the AUC of class 1's probability. More: the unweighted mean of the
    one-vs-rest AUCs over the classes present (scikit-learn's ``multi_class="ovr"``
    needs every class present, which a small test split need not have). NaN when it is
    undefined: fewer than two classes present, or non-finite probabilities (a
    diverged model).
    """
    present = np.unique(labels)
    if len(present) < 2 or not np.isfinite(probs).all():
        return math.nan
    if probs.shape[1] == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    return float(np.mean([roc_auc_score(labels == c, probs[:, c]) for c in present]))
