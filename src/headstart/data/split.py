"""Deterministic train/validation/test assignment by hashing each file's relative path.

An image's split depends on its own path only, so adding images never moves old ones.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "val", "test")


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
    from headstart.errors import HeadstartError

    for name, value in (("--val-percent", val_percent), ("--test-percent", test_percent)):
        if not 0 <= value < 100:
            raise HeadstartError(f"{name} must be between 0 and 100, got {value}")
    if val_percent + test_percent >= 100:
        raise HeadstartError("--val-percent plus --test-percent must leave images for training")
