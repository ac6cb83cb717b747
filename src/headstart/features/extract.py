"""Feature extraction: image bytes in, pooled backbone features out, cached per image content.

`FeatureExtractor.extract_batch` is the per-batch unit (bytes in, vectors out, no paths, no
cache) so that it can run on any worker; `extract_files` adds the cache, parallel decoding
overlapped with inference, progress, and the report of files it had to skip.
"""

from __future__ import annotations

import copy
import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol, TypeVar

import numpy as np
from numpy.typing import DTypeLike

from headstart.backbones.preprocessing import Preprocessing
from headstart.backbones.registry import Backbone
from headstart.console import progress_bar
from headstart.data.locations import ImagePath, image_location, read_file
from headstart.features.engines import Engine, create_engine
from headstart.features.store import FeatureSource
from headstart.features.views import PLAIN, View, pixels_or_reason
from headstart.threads import cpu_threads

_MAX_PASSES = 3
T = TypeVar("T")
R = TypeVar("R")
# (position in the input paths, digest of the bytes decoded, features, why there are none)
Computed = tuple[int, "bytes | None", "np.ndarray | None", "str | None"]


class Runner(Protocol):
    """Computes features elsewhere (a cluster) for the files the cache lacks."""

    def compute(
        self, extractor: FeatureExtractor, paths: list[ImagePath], positions: list[int]
    ) -> Iterator[list[Computed]]: ...


@dataclass
class BatchFeatures:
    indices: list[int]  # positions of the inputs that decoded
    features: np.ndarray  # (len(indices), dim) float32
    errors: dict[int, str] = field(default_factory=dict)  # position -> why it did not decode


@dataclass
class ExtractionResult:
    features: np.ndarray  # (len(kept), dim) float32, or the dtype asked for
    kept: list[int]  # positions in the input paths that have features
    skipped: list[tuple[ImagePath, str]]  # files that could not be read or decoded, with the reason
    computed: int  # images that went through the backbone in this call
    from_cache: int
    digests: list[bytes] = field(default_factory=list)  # content digest of each kept file


class FeatureExtractor:
    def __init__(
        self,
        backbone: Backbone,
        cache: FeatureSource,
        engine: str = "auto",
        batch_size: int = 32,
        workers: int | None = None,
        view: View = PLAIN,
        runner: Runner | None = None,
    ) -> None:
        self.backbone = backbone
        self.cache = cache
        self.engine_name = engine
        self.batch_size = batch_size
        self.workers = workers or cpu_threads()
        self.view = view
        self.runner = runner
        # One engine for this extractor and its views, or the Future that is making it.
        self._shared: dict[str, Engine | Future] = {}

    @property
    def engine(self) -> Engine:
        """Created on first use, so a run served entirely from the cache never loads a model."""
        if "engine" not in self._shared:
            self._shared["engine"] = self._create_engine()
        engine = self._shared["engine"]
        if isinstance(engine, Future):
            engine = self._shared["engine"] = engine.result()
        return engine

    @engine.setter
    def engine(self, engine: Engine) -> None:
        self._shared["engine"] = engine

    def _create_engine(self) -> Engine:
        return create_engine(self.backbone, self.engine_name, self.cache.workspace.onnx)

    def _start_engine(self) -> None:
        """Make the engine in the background while the first images are read and decoded:
        importing PyTorch and exporting the backbone take seconds on a first run."""
        if "engine" not in self._shared:
            starter = ThreadPoolExecutor(1, thread_name_prefix="headstart-engine")
            self._shared["engine"] = starter.submit(self._create_engine)
            starter.shutdown(wait=False)

    @property
    def fingerprint(self) -> str:
        """Identifies this extractor's features: the backbone's, and the view's if not plain."""
        return self.view.fingerprint(self.backbone.fingerprint)

    def with_view(self, view: View) -> FeatureExtractor:
        """The same extractor (sharing its engine) computing features of another view."""
        other = copy.copy(self)
        other.view = view
        return other

    def extract_batch(self, encoded: Sequence[bytes]) -> BatchFeatures:
        """Features for a batch of encoded images (JPEG, PNG, ... bytes)."""
        with ThreadPoolExecutor(self.workers) as pool:
            decoded = list(pool.map(self._decode, encoded))
        indices = [i for i, (pixels, _) in enumerate(decoded) if pixels is not None]
        errors = {i: error for i, (pixels, error) in enumerate(decoded) if error is not None}
        if not indices:
            return BatchFeatures([], np.zeros((0, 0), np.float32), errors)
        features = self._forward([pixels for pixels, _ in decoded if pixels is not None])
        return BatchFeatures(indices, features, errors)

    def extract_files(
        self,
        paths: Sequence[ImagePath],
        progress: bool = False,
        description: str = "Features",
        dtype: DTypeLike = np.float32,
    ) -> ExtractionResult:
        """Features for image files, computing only those not already in the cache, as a
        matrix of `dtype` (float16 holds them exactly, in half float32's memory).

        Each file is hashed, and those not cached are read again to decode; features are
        stored under the digest of exactly the bytes decoded, so a file saved anew in between
        can never put its new content's features under its old content's key.
        """
        fingerprint = self.fingerprint
        with ThreadPoolExecutor(self.workers) as pool:
            first_read = list(pool.map(_digest_file, paths))
            digests = {i: d for i, d in enumerate(first_read) if isinstance(d, bytes)}
            failed = {i: d for i, d in enumerate(first_read) if isinstance(d, str)}
            vectors = self.cache.get_many(fingerprint, list(digests.values()))
            from_cache = sum(d in vectors for d in digests.values())
            bad_content: dict[bytes, str] = {}  # digest -> why those bytes did not decode
            computed = 0

            def compute(todo: list[int], advance: Callable[[int], None]) -> int:
                done = 0
                for batch in self._computed(paths, todo, pool):
                    fresh = {}
                    for i, digest, vector, reason in batch:
                        if digest is None:  # unreadable on the second read
                            failed[i] = reason or "unreadable"
                            digests.pop(i, None)
                            continue
                        digests[i] = digest
                        if vector is None:
                            bad_content[digest] = reason or "not a readable image"
                        else:
                            fresh[digest] = vector
                    if fresh:
                        self.cache.put_many(fingerprint, fresh.items())
                        vectors.update(fresh)
                        done += len(fresh)
                    advance(len(batch))
                return done

            def pending() -> list[int]:
                return _first_with_each_digest(
                    (i, d) for i, d in digests.items() if d not in vectors and d not in bad_content
                )

            todo = pending()
            if todo and self.runner is None:
                self._start_engine()
            try:
                with progress_bar(description, len(todo), progress) as advance:
                    # Another pass only for copies of a file that changed between two reads.
                    for _ in range(_MAX_PASSES):
                        if not todo:
                            break
                        computed += compute(todo, advance)
                        todo = pending()
            finally:  # interrupted too: what was computed is kept
                self.cache.flush()
        for i, digest in digests.items():
            if digest in bad_content:
                failed[i] = bad_content[digest]
            elif digest not in vectors:
                failed[i] = "unreadable: the file kept changing while it was read"
        kept = sorted(i for i, d in digests.items() if d in vectors)
        skipped = [(image_location(paths[i]), failed[i]) for i in sorted(failed)]
        features = _matrix([vectors[digests[i]] for i in kept], dtype)
        kept_digests = [digests[i] for i in kept]
        return ExtractionResult(features, kept, skipped, computed, from_cache, kept_digests)

    def _computed(
        self, paths: Sequence[ImagePath], todo: list[int], pool: ThreadPoolExecutor
    ) -> Iterator[list[Computed]]:
        """Batches of (position, digest, vector, reason) for the positions `todo`: on the
        runner when there is one (a cluster), else here."""
        if self.runner is not None:
            yield from self.runner.compute(self, [image_location(paths[i]) for i in todo], todo)
            return
        decode = partial(decode_file, self.backbone.preprocessing, self.view)
        window = 4 * self.batch_size
        decoded = bounded_map(pool, lambda i: (i, *decode(image_location(paths[i]))), todo, window)
        for batch in _batches(decoded, self.batch_size):
            yield forward_rows(self.engine, batch)

    def _forward(self, pixels: list[np.ndarray]) -> np.ndarray:
        return forward(self.engine, pixels)

    def _decode(self, data: bytes) -> tuple[np.ndarray | None, str | None]:
        return pixels_or_reason(self.backbone.preprocessing, data, view=self.view)


def _matrix(vectors: list[np.ndarray], dtype: DTypeLike) -> np.ndarray:
    """The vectors as rows, filled in place: no second copy at another type."""
    matrix = np.empty((len(vectors), len(vectors[0]) if vectors else 0), dtype)
    for row, vector in enumerate(vectors):
        matrix[row] = vector
    return matrix


def forward(engine: Engine, pixels: list[np.ndarray]) -> np.ndarray:
    """Features of decoded images, rounded through float16 like the cache, so fresh and cached
    features are identical."""
    return engine(np.stack(pixels)).astype(np.float16).astype(np.float32)


def forward_rows(engine: Engine, batch: list[tuple]) -> list[Computed]:
    """(position, digest, pixels, reason) rows to (position, digest, features, reason)."""
    good = [k for k, row in enumerate(batch) if row[2] is not None]
    vectors = (
        dict(zip(good, forward(engine, [batch[k][2] for k in good]), strict=True)) if good else {}
    )
    return [(i, digest, vectors.get(k), reason) for k, (i, digest, _, reason) in enumerate(batch)]


def decode_file(
    preprocessing: Preprocessing, view: View, path: ImagePath
) -> tuple[bytes | None, np.ndarray | None, str | None]:
    """(digest of the bytes decoded or None, network input or None, why not): each file is
    read once here, so its features go under the digest of exactly what was decoded."""
    data = read_file(path)
    if isinstance(data, str):
        return None, None, data
    pixels, reason = pixels_or_reason(preprocessing, data, view=view)
    return content_digest(data), pixels, reason


DIGEST_SIZE = 20


def content_digest(data: bytes) -> bytes:
    """The cache key of an image's content."""
    return hashlib.blake2b(data, digest_size=DIGEST_SIZE).digest()


def _digest_file(path: ImagePath) -> bytes | str:
    """A content hash of the file, or why it could not be read."""
    data = read_file(path)
    return data if isinstance(data, str) else content_digest(data)


def _first_with_each_digest(pairs: Iterable[tuple[int, bytes]]) -> list[int]:
    """Positions to compute: files with identical content go through the backbone once."""
    seen: set[bytes] = set()
    first = []
    for index, digest in pairs:
        if digest not in seen:
            seen.add(digest)
            first.append(index)
    return first


def bounded_map(
    pool: ThreadPoolExecutor, function: Callable[[T], R], items: Iterable[T], window: int = 64
) -> Iterator[R]:
    """pool.map in order, with at most `window` results in flight to bound memory."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(function, item))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
