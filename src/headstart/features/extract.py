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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from headstart.backbones.preprocessing import Preprocessing
from headstart.backbones.registry import Backbone
from headstart.console import progress_bar
from headstart.features.cache import FeatureCache
from headstart.features.engines import Engine, cpu_threads, create_engine
from headstart.features.views import PLAIN, View

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class BatchFeatures:
    indices: list[int]  # positions of the inputs that decoded
    features: np.ndarray  # (len(indices), dim) float32
    errors: dict[int, str] = field(default_factory=dict)  # position -> why it did not decode


@dataclass
class ExtractionResult:
    features: np.ndarray  # (len(kept), dim) float32
    kept: list[int]  # positions in the input paths that have features
    skipped: list[tuple[Path, str]]  # files that could not be read or decoded, with the reason
    computed: int  # images that went through the backbone in this call
    from_cache: int


class FeatureExtractor:
    def __init__(
        self,
        backbone: Backbone,
        cache: FeatureCache,
        engine: str = "auto",
        batch_size: int = 32,
        workers: int | None = None,
        view: View = PLAIN,
    ) -> None:
        self.backbone = backbone
        self.cache = cache
        self.engine_name = engine
        self.batch_size = batch_size
        self.workers = workers or cpu_threads()
        self.view = view
        self._shared: dict[str, Engine] = {}  # one engine for this extractor and its views

    @property
    def engine(self) -> Engine:
        """Created on first use, so a run served entirely from the cache never loads a model."""
        if "engine" not in self._shared:
            model_dir = self.cache.directory / "onnx"
            self._shared["engine"] = create_engine(self.backbone, self.engine_name, model_dir)
        return self._shared["engine"]

    @engine.setter
    def engine(self, engine: Engine) -> None:
        self._shared["engine"] = engine

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
        features = self._forward([decoded[i][0] for i in indices])
        return BatchFeatures(indices, features, errors)

    def extract_files(
        self, paths: Sequence[Path], progress: bool = False, description: str = "Features"
    ) -> ExtractionResult:
        """Features for image files, computing only those not already in the cache."""
        fingerprint = self.fingerprint
        with ThreadPoolExecutor(self.workers) as pool:
            digests = list(pool.map(_digest_file, paths))
            readable = {i: d for i, d in enumerate(digests) if isinstance(d, bytes)}
            failures = {d: d for d in digests if isinstance(d, str)}  # reason stands for itself
            vectors = self.cache.get_many(fingerprint, list(readable.values()))
            todo = _first_with_each_digest((i, d) for i, d in readable.items() if d not in vectors)
            computed = 0
            with progress_bar(description, len(todo), progress) as advance:
                decoded = bounded_map(pool, self._decode_file(paths), todo, 4 * self.batch_size)
                for batch in _batches(decoded, self.batch_size):
                    good = [(digests[i], pixels) for i, pixels, _ in batch if pixels is not None]
                    failures.update((digests[i], error) for i, _, error in batch if error)
                    if good:
                        features = self._forward([pixels for _, pixels in good])
                        fresh = {
                            digest: vector
                            for (digest, _), vector in zip(good, features, strict=True)
                        }
                        self.cache.put_many(fingerprint, fresh.items())
                        vectors.update(fresh)
                        computed += len(good)
                    advance(len(batch))
        kept = [i for i, d in readable.items() if d in vectors]
        skipped = [(Path(paths[i]), failures[d]) for i, d in enumerate(digests) if d in failures]
        features = (
            np.stack([vectors[digests[i]] for i in kept]).astype(np.float32)
            if kept
            else np.zeros((0, 0), np.float32)
        )
        return ExtractionResult(features, kept, skipped, computed, len(readable) - len(todo))

    def _forward(self, pixels: list[np.ndarray]) -> np.ndarray:
        features = self.engine(np.stack(pixels))
        # Rounded through float16 like the cache, so fresh and cached features are identical.
        return features.astype(np.float16).astype(np.float32)

    def _decode(self, data: bytes) -> tuple[np.ndarray | None, str | None]:
        return pixels_or_reason(self.backbone.preprocessing, data, view=self.view)

    def _decode_file(self, paths: Sequence[Path]) -> Callable[[int], tuple]:
        def decode(index: int) -> tuple[int, np.ndarray | None, str | None]:
            pixels = pixels_or_reason(
                self.backbone.preprocessing, Path(paths[index]), view=self.view
            )
            return index, *pixels

        return decode


def pixels_or_reason(
    preprocessing: Preprocessing,
    source: bytes | Path,
    max_pixels: int | None = None,
    view: View = PLAIN,
) -> tuple[np.ndarray | None, str | None]:
    """The network input for a view of an image (bytes or file), or why there is none."""
    try:
        data = source if isinstance(source, bytes) else source.read_bytes()
    except OSError as error:
        return None, f"unreadable: {error.strerror or error}"
    try:
        return view.pixels(preprocessing, data, max_pixels), None
    except ValueError as error:
        return None, f"not a readable image: {error}"


def _digest_file(path: Path) -> bytes | str:
    """A content hash of the file, or why it could not be read."""
    try:
        return hashlib.blake2b(Path(path).read_bytes(), digest_size=20).digest()
    except OSError as error:
        return f"unreadable: {error.strerror or error}"


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
