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

from headstart.console import warn
from headstart.context import Workspace
from headstart.errors import HeadstartError

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
            if not _locked(error) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


def _locked(error: sqlite3.Error) -> bool:
    return "locked" in str(error) or "busy" in str(error)


def _make_folder(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise HeadstartError(f"{directory}: is a file, not a cache folder (see --cache-dir)")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise HeadstartError(
            f"{directory}: cannot create the cache folder ({error.strerror}); "
            "give another with --cache-dir or $HEADSTART_CACHE_DIR"
        ) from error


class FeatureCache:
    """Opened read-write when it can be; a damaged file is moved aside and started afresh, and a
    cache the user cannot write to is read (features are then computed but not kept)."""

    def __init__(self, directory: Path | str | None = None) -> None:
        self.workspace = Workspace.at(directory)
        self.path = self.workspace.features
        self.read_only = False
        _make_folder(self.workspace.root)
        self._open()

    def _open(self) -> None:
        if not os.access(self.workspace.root, os.W_OK):
            self._open_read_only()
            return
        try:
            if self.path.is_dir():
                raise sqlite3.DatabaseError("a folder stands where the cache file belongs")
            self._connect()
            self._db.execute("SELECT 1 FROM features LIMIT 1").fetchall()
        except sqlite3.DatabaseError as error:
            if _locked(error):
                raise
            self._move_aside(error)
            self._connect()

    def _connect(self) -> None:
        self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        _retry_while_locked(self._set_up)

    def _open_read_only(self) -> None:
        self.read_only = True
        warn(
            f"the feature cache {self.workspace.root} is read-only: cached features are used, new "
            "ones are computed but not kept"
        )
        if self.path.is_file():
            # immutable: no -shm/-wal files are needed (or can be made) in a read-only folder
            uri = f"{self.path.resolve().as_uri()}?mode=ro&immutable=1"
            try:
                self._db = sqlite3.connect(uri, uri=True, isolation_level=None)
                self._db.execute("SELECT 1 FROM features LIMIT 1").fetchall()
                return
            except sqlite3.DatabaseError:
                warn(f"{self.path} is unreadable and cannot be rebuilt here")
        self._db = sqlite3.connect(":memory:", isolation_level=None)
        self._db.execute(_SCHEMA)

    def _move_aside(self, error: sqlite3.Error) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            damaged = Path(f"{self.path}{suffix}")
            if damaged.exists():
                damaged.rename(f"{self.path}.damaged-{stamp}{suffix}")
        warn(
            f"the feature cache {self.path} was unreadable ({error}); it was moved aside to "
            f"{self.path.name}.damaged-{stamp} and a new one started"
        )

    def _set_up(self) -> None:
        self._db.execute("PRAGMA page_size=16384")  # only takes effect on a new file
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def get_many(self, fingerprint: str, digests: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        try:
            return self._get_many(fingerprint, digests)
        except sqlite3.DatabaseError as error:  # damaged after opening: start again, all misses
            self._start_again(error)
            return {}

    def _start_again(self, error: sqlite3.DatabaseError) -> None:
        """The file was damaged after it was opened (by another process, say): move it aside
        and carry on with a new one."""
        if _locked(error) or self.read_only:
            raise error
        self._db.close()
        self._move_aside(error)
        self._open()

    def _get_many(self, fingerprint: str, digests: Sequence[bytes]) -> dict[bytes, np.ndarray]:
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
                if len(vector) != dim * 2:  # a damaged row is a miss, never a wrong vector
                    continue
                values = np.frombuffer(vector, dtype=np.float16)
                if np.isfinite(values).all():  # NaN or inf: damaged too, computed again
                    found[digest] = values
        return found

    def put_many(self, fingerprint: str, items: Iterable[tuple[bytes, np.ndarray]]) -> None:
        rows = [
            (fingerprint, digest, int(vector.size), vector.astype(np.float16).tobytes())
            for digest, vector in items
        ]
        if not rows or self.read_only:
            return
        try:
            self._insert(rows)
        except sqlite3.DatabaseError as error:
            self._start_again(error)
            self._insert(rows)

    def _insert(self, rows: list[tuple]) -> None:
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?)", rows)

    def flush(self) -> None:
        """Nothing to do: every put_many is already committed."""

    def fingerprints(self) -> list[str]:
        """The backbone fingerprints that have features here."""
        rows = self._db.execute("SELECT DISTINCT fingerprint FROM features ORDER BY fingerprint")
        return [row[0] for row in rows]

    def items(self, fingerprint: str) -> Iterator[tuple[bytes, np.ndarray]]:
        """Every (digest, vector) of one fingerprint."""
        query = "SELECT digest, dim, vector FROM features WHERE fingerprint = ?"
        for digest, dim, vector in self._db.execute(query, (fingerprint,)):
            if len(vector) == dim * 2:
                yield digest, np.frombuffer(vector, dtype=np.float16)

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
