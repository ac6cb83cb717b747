"""Likely label errors: confident learning (Northcutt, Jiang and Chuang, JAIR 2021) on
out-of-sample probabilities from k-fold cross-validation of the linear head."""

from __future__ import annotations

import numpy as np

from headstart.training.solver import fit_linear

FOLDS = 5


def out_of_sample_probabilities(
    x: np.ndarray, y: np.ndarray, num_classes: int, folds: int = FOLDS, seed: int = 0
) -> np.ndarray:
    """Class probabilities for each image from a head that never saw it.

    The L2 strength is chosen once, on a fifth of the first fold's training part, and every
    fold's head then solves at that strength: one regularisation path instead of five.
    """
    from scipy.special import softmax
    from sklearn.model_selection import StratifiedKFold, train_test_split

    folds = max(2, min(folds, int(np.bincount(y, minlength=num_classes).min())))
    probabilities = np.zeros((len(y), num_classes), np.float64)
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    l2 = None
    for train, held in splitter.split(x, y):
        if l2 is None:
            fit_part, choose_part = train_test_split(
                train, test_size=0.2, random_state=seed, stratify=_stratifiable(y[train])
            )
            path = fit_linear(x[fit_part], y[fit_part], x[choose_part], y[choose_part], num_classes)
            l2 = path.l2
        fit = fit_linear(x[train], y[train], x[:0], y[:0], num_classes, l2=l2)
        logits = x[held] @ fit.weight.T + fit.bias
        probabilities[held] = softmax(logits.astype(np.float64), axis=1)
    return probabilities


def out_of_sample_label_scores(
    x: np.ndarray, y: np.ndarray, folds: int = FOLDS, seed: int = 0
) -> np.ndarray:
    """Multi-label (y a 0/1 matrix): each label's probability for each image, from a
    sigmoid head that never saw it; folds dealt by each photo's rarest label."""
    from scipy.special import expit

    from headstart.training.choice import stratified_folds

    labels = y.shape[1]
    fold_of = stratified_folds(y, labels, seed)
    scores = np.zeros(y.shape, np.float64)
    l2 = None
    for fold in range(int(fold_of.max()) + 1):
        train, held = np.flatnonzero(fold_of != fold), np.flatnonzero(fold_of == fold)
        if l2 is None:  # chosen once, as for a single label
            cut = len(train) // 5
            fit_part, choose_part = train[cut:], train[:cut]
            path = fit_linear(
                x[fit_part], y[fit_part], x[choose_part], y[choose_part], labels, multi_label=True
            )
            l2 = path.l2
        fit = fit_linear(x[train], y[train], x[:0], y[:0], labels, l2=l2, multi_label=True)
        scores[held] = expit((x[held] @ fit.weight.T + fit.bias).astype(np.float64))
    return scores


def likely_label_errors(y: np.ndarray, probabilities: np.ndarray) -> list[int]:
    """Positions of likely mislabelled images, most suspicious first (lowest self-confidence);
    for a multi-label 0/1 matrix, images where any label looks wrongly given or left out."""
    if y.ndim == 2:
        from cleanlab.multilabel_classification.filter import find_label_issues as multi

        given = [np.flatnonzero(row > 0.5).tolist() for row in y]
        found = multi(
            labels=given,
            pred_probs=probabilities,
            return_indices_ranked_by="self_confidence",
            n_jobs=1,
        )
        return [int(i) for i in found]
    from cleanlab.filter import find_label_issues  # pandas underneath: loaded only here

    found = find_label_issues(
        labels=y,
        pred_probs=probabilities,
        return_indices_ranked_by="self_confidence",
        n_jobs=1,  # its process pool costs more than it saves at these sizes
    )
    return [int(i) for i in found]


def _stratifiable(labels: np.ndarray) -> np.ndarray | None:
    """The labels to stratify by, or None where some class has too few images for it."""
    return labels if np.bincount(labels).min(initial=2) >= 2 else None
