"""How many threads to run, from the cores this process may really use, and runtimes that
wait for a core by sleeping, not spinning: on a machine shared with other busy processes a
spinning thread burns the core another thread is waiting for."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cpu_threads() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota if any."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(cores, math.ceil(quota)) if quota else cores)


def _cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup (v2 cpu.max, or v1 cfs quota), None when unlimited."""
    try:
        limit, window = (root / "cpu.max").read_text().split()[:2]
        return None if limit == "max" else int(limit) / int(window)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def onnx_session_options(threads: int | None = None) -> Any:
    """ONNX Runtime options: intra-op threads for the usable cores, and no spin-waiting."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cpu_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def prefer_passive_waiting() -> None:
    """OpenMP threads (PyTorch's) sleep when idle instead of spinning; the user's choice wins.

    Must run before PyTorch is first imported: OpenMP reads it once.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class Rerun:
    """Runs `work` in a background thread when asked; asked again while it runs, it runs once
    more right after (never twice at once, never a request lost), so a request never waits.
    One thread does all the runs: what `work` opens (an SQLite connection, say) stays usable."""

    def __init__(self, work: Callable[[], None]) -> None:
        self._work = work
        self._pending = self._running = False
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition()

    def request(self) -> None:
        with self._changed:
            self._pending = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, daemon=True)
                self._thread.start()
            self._changed.notify_all()

    @property
    def busy(self) -> bool:
        """Running, or about to."""
        with self._changed:
            return self._pending or self._running

    def wait(self, timeout: float | None = None) -> bool:
        """Until nothing runs or is due; False when `timeout` seconds pass first."""
        with self._changed:
            return self._changed.wait_for(lambda: not (self._pending or self._running), timeout)

    def _serve(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending)
                self._pending, self._running = False, True
            try:
                self._work()
            finally:
                with self._changed:
                    self._running = False
                    self._changed.notify_all()
