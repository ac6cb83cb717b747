"""Deterministic train/validation/test assignment by hashing each file's relative path.

An image's split depends on its own path only, so adding images never moves old ones.
"""

from __future__ import annotations

import hashlib

from headstart.errors import SettingError
from headstart.settings import number

SPLITS = ("train", "val", "test")
PERCENT = number(0.0, 99.99, kind=float)
# The shares held out when a dataset gives no split of its own: declared once, here.
VAL_PERCENT = 10.0
TEST_PERCENT = 10.0


def hashed_split(key: str, val_percent: float, test_percent: float) -> str:
    """The split for `key`: test takes the lowest hash buckets, validation the next ones."""
    bucket = (
        int.from_bytes(hashlib.sha1(key.encode("utf-8", "surrogateescape")).digest()[:8], "big")
        % 10_000
    )
    percent = bucket / 100.0
    if percent < test_percent:
        return "test"
    if percent < test_percent + val_percent:
        return "val"
    return "train"


def check_percents(val_percent: float, test_percent: float) -> None:
    """Refuse shares outside [0, 100) or leaving nothing to train on (a SettingError)."""
    flags = {"val_percent": "--val-percent", "test_percent": "--test-percent"}
    for name, value in (("val_percent", val_percent), ("test_percent", test_percent)):
        problem = PERCENT(value)
        if problem:
            raise SettingError(f"{name} {problem}, not {value!r}", flags)
    if val_percent + test_percent >= 100:
        raise SettingError("val_percent plus test_percent must leave images for training", flags)
