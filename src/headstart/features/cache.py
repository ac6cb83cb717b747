"""A persistent bottleneck cache: one SQLite file, float16 vectors keyed by content and backbone.

SQLite transactions make every write all-or-nothing, so a killed run never leaves an entry that
reads back as valid, and WAL mode lets several processes share one cache safely.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from platformdirs import user_cache_dir

CACHE_ENV = "HEADSTART_CACHE_DIR"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS features (
    fingerprint TEXT NOT NULL,
    digest BLOB NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    PRIMARY KEY (fingerprint, digest)
) WITHOUT ROWID
"""
_LOOKUP_CHUNK = 500  # stays under SQLite's limit on bound parameters


def _retry_while_locked(action, attempts: int = 100) -> None:
    """Switching a new file to WAL can fail at once (no busy wait) when two processes race."""
    for attempt in range(attempts):
        try:
            return action()
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


def default_cache_dir() -> Path:
    """$HEADSTART_CACHE_DIR, else the user's cache folder (~/.cache/headstart on Linux)."""
    return Path(os.environ.get(CACHE_ENV) or user_cache_dir("headstart")).expanduser()


class FeatureCache:
    def __init__(self, directory: Path | str | None = None) -> None:
        self.directory = Path(directory).expanduser() if directory else default_cache_dir()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "features.sqlite3"
        self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        _retry_while_locked(self._set_up)

    def _set_up(self) -> None:
        self._db.execute("PRAGMA page_size=16384")  # only takes effect on a new file
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def get_many(self, fingerprint: str, digests: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        unique = list(dict.fromkeys(digests))
        for start in range(0, len(unique), _LOOKUP_CHUNK):
            chunk = unique[start : start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                "SELECT digest, dim, vector FROM features "
                f"WHERE fingerprint = ? AND digest IN ({marks})",
                [fingerprint, *chunk],
            )
            for digest, dim, vector in rows:
                if len(vector) == dim * 2:  # a damaged row is a miss, never a wrong vector
                    found[digest] = np.frombuffer(vector, dtype=np.float16)
        return found

    def put_many(self, fingerprint: str, items: Iterable[tuple[bytes, np.ndarray]]) -> None:
        rows = [
            (fingerprint, digest, int(vector.size), vector.astype(np.float16).tobytes())
            for digest, vector in items
        ]
        if not rows:
            return
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?)",
                rows,
            )

    def count(self, fingerprint: str | None = None) -> int:
        if fingerprint is None:
            return self._db.execute("SELECT COUNT(*) FROM features").fetchone()[0]
        query = "SELECT COUNT(*) FROM features WHERE fingerprint = ?"
        return self._db.execute(query, (fingerprint,)).fetchone()[0]

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
