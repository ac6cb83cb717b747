"""Images far from the rest: from every other image of their class, or (val/test images)
from all training images. Far means a modified z-score (Iglewicz and Hoaglin: median and
median absolute deviation) above 3.5 on the mean distance to the k nearest reference images,
so clean data raises few alarms."""

from __future__ import annotations

import numpy as np

from headstart.doctor.neighbours import nearest

K = 5
FAR = 3.5


def robust_z(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """How many robust standard deviations (the normal-scaled MAD) each value lies above the
    reference's median; NaNs in the reference are left out."""
    from scipy.stats import median_abs_deviation  # cleanlab loads it in every doctor run

    median = float(np.nanmedian(reference))
    spread = float(median_abs_deviation(reference, scale="normal", nan_policy="omit"))
    return (values - median) / max(spread, 1e-6)


def outliers_in_class(unit: np.ndarray, y: np.ndarray) -> list[tuple[int, float]]:
    """(position, z) of images far from the others of their class."""
    found = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        if len(members) < K + 2:
            continue
        rows = unit[members]
        distances, _ = nearest(rows, rows, K, leave_out_self=True)
        mean = distances.mean(axis=1)
        z = robust_z(mean, mean)
        found += [(int(members[i]), float(z[i])) for i in np.flatnonzero(z > FAR)]
    return found


def far_from_training(unit: np.ndarray, is_training: np.ndarray) -> list[tuple[int, float]]:
    """(position, z) of non-training images unlike any training image."""
    train, others = np.flatnonzero(is_training), np.flatnonzero(~is_training)
    if len(train) < K + 2 or not len(others):
        return []
    reference, _ = nearest(unit[train], unit[train], K, leave_out_self=True)
    distances, _ = nearest(unit[others], unit[train], K)
    z = robust_z(distances.mean(axis=1), reference.mean(axis=1))
    return [(int(others[i]), float(z[i])) for i in np.flatnonzero(z > FAR)]
