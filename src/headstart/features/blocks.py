"""Feature matrices held at float16 and computed with a block of rows at a time.

Features are float16 in the cache and the store, and fresh ones are rounded the same way, so
a float16 matrix holds them exactly in half the memory of float32. Arithmetic wants float32
(NumPy has no float16 BLAS): each block is converted as it is used, and a float32 copy of a
large matrix never exists.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np

BLOCK_ROWS = 16384  # 16k x 1,792 float32 features: 117 MB of scratch at a time


def float32_blocks(x: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, float32 rows) for each block of `x`; float32 blocks are views, not copies."""
    rows = BLOCK_ROWS
    for start in range(0, len(x), rows):
        yield start, np.asarray(x[start : start + rows], dtype=np.float32)


def map_rows(function: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """`function` of the float32 rows of `x`, computed a block at a time when `x` is not
    float32 already; `function` must treat rows independently."""
    if x.dtype == np.float32 or len(x) <= BLOCK_ROWS:
        return function(np.asarray(x, dtype=np.float32))
    return np.concatenate([function(block) for _, block in float32_blocks(x)])


def working_copy(x: np.ndarray) -> np.ndarray:
    """`x` as float32 when that copy fits in memory with room to spare, else `x` as it is.

    Converting each block on every pass made the linear fit 2-3x slower
    (bench/head_memory.py), so the copy is worth making whenever it fits. Blocks are summed
    in the same order either way: the result is the same to the bit.
    """
    if x.dtype != np.float32 and x.size * 4 <= copy_budget():
        return x.astype(np.float32)
    return x


def copy_budget() -> int:
    """Half the memory the system can give now without swapping."""
    return available_memory() // 2


def available_memory() -> int:
    """Linux's MemAvailable (free pages plus reclaimable cache); free pages elsewhere."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # not every system names these
        return 1 << 30


def column_mean(x: np.ndarray) -> np.ndarray:
    """The mean row, summed in float32 whatever the matrix's type, without a float32 copy."""
    return np.asarray(np.mean(x, axis=0, dtype=np.float32))
