"""Running an exported ONNX classifier with ONNX Runtime alone: no PyTorch import on this path."""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from headstart.backbones.preprocessing import Preprocessing, pixels_or_reason
from headstart.data.images import decode_rgb
from headstart.data.locations import ImagePath
from headstart.errors import HeadstartError
from headstart.model.prediction import Prediction, expand_image_paths, top_k_predictions
from headstart.threads import onnx_session_options

# An `export --any-size` file's input: one decoded photo (H, W, 3) uint8 of any size.
ANY_SIZE_INPUT = "image"
SCORES_OUTPUT = "scores"  # a multi-label export's first output: a sigmoid a label
THRESHOLDS_KEY = "headstart.thresholds"  # and its labels' thresholds, in the metadata

if TYPE_CHECKING:
    from headstart.model.explanation import Explanation


class OnnxClassifier:
    """An exported model file: predicts from image files or bytes like `Classifier` does."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise HeadstartError(f"{self.path}: no such ONNX file")
        options = onnx_session_options(threads)
        try:
            self.session = ort.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # ONNX Runtime reports bad files with its own exception types
            raise HeadstartError(f"{self.path}: not a loadable ONNX model ({error})") from error
        metadata = self.session.get_modelmeta().custom_metadata_map
        if "headstart.labels" not in metadata:
            raise HeadstartError(f"{self.path}: not exported by headstart (no labels metadata)")
        self.labels: list[str] = json.loads(metadata["headstart.labels"])
        self.backbone: dict = json.loads(metadata["headstart.backbone"])
        self.preprocessing = Preprocessing.from_dict(
            json.loads(metadata["headstart.preprocessing"])
        )
        self.metadata = metadata
        outputs = [output.name for output in self.session.get_outputs()]
        self.outputs = tuple(outputs)
        # A multi-label file's first output is `scores`, a sigmoid a label, with thresholds
        self.thresholds = _thresholds(self.path, metadata, len(self.labels), outputs)
        self.multi_label = bool(self.thresholds)
        # export --any-size: one decoded photo of any size in, resized and cropped in the graph
        self.any_size = self.session.get_inputs()[0].name == ANY_SIZE_INPUT
        # Models exported with an unknown-image score: its threshold, else None.
        self.unknown_threshold: float | None = (
            float(json.loads(metadata["headstart.unknown_threshold"]))
            if "unknown_score" in outputs and "headstart.unknown_threshold" in metadata
            else None
        )

    def explain(
        self, images: str | ImagePath | Iterable[str | ImagePath], label: str | None = None
    ) -> list[Explanation]:
        """Per image, the heat map of `label` (else of its top label), from the file's
        `heatmap` output (export --explain): the maps Classifier.explain gives, without PyTorch."""
        from headstart.model.explanation import explain_files  # only when asked

        if "heatmap" not in self.outputs or self.any_size:
            raise HeadstartError(
                f"{self.path}: exported without heat maps; export it again with --explain"
            )
        return explain_files(
            expand_image_paths(images), self.preprocessing, self.labels, self.explain_pixels, label
        )

    def explain_pixels(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (N, K) and every label's heat map (N, K, h, w) for network inputs."""
        probabilities, _, maps = self._batched(list(pixels), len(pixels) or 1, heat_maps=True)
        assert maps is not None
        return probabilities, maps

    def is_unknown(self, score: float) -> bool:
        """Whether an unknown-image score is past the model's threshold (never without one)."""
        return self.unknown_threshold is not None and score > self.unknown_threshold

    def network_input(self, data: bytes, max_pixels: int | None = None) -> np.ndarray:
        """What the file takes for one image's bytes: the resized and cropped pixels, or for
        an any-size file the whole decoded photo. ValueError when it does not decode."""
        if self.any_size:
            return np.asarray(decode_rgb(data, max_pixels=max_pixels), np.uint8)
        return self.preprocessing.pixels(data, max_pixels)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities for uint8 pixels of shape (N, H, W, 3)."""
        return self._batched(list(pixels), len(pixels) or 1)[0]

    def predict_pixels(
        self, pixels: list[np.ndarray], top_k: int = 5, batch_size: int = 32
    ) -> list[list[tuple[str, float]]]:
        """Top-k (label, probability) pairs for already decoded network inputs."""
        return self.rank_pixels(pixels, top_k, batch_size)[0]

    def rank_pixels(
        self, pixels: list[np.ndarray], top_k: int = 5, batch_size: int = 32
    ) -> tuple[list[list[tuple[str, float]]], np.ndarray | None]:
        """Top-k (label, probability) pairs, and the unknown-image scores (None when the model
        has none), for already decoded network inputs."""
        probabilities, scores, _ = self._batched(pixels, batch_size)
        return self._ranked(probabilities, top_k), scores

    def rank_and_map_pixels(
        self, pixels: list[np.ndarray], top_k: int = 5, batch_size: int = 32
    ) -> tuple[list[list[tuple[str, float]]], np.ndarray | None, np.ndarray, np.ndarray]:
        """`rank_pixels`, and the probabilities with every label's heat maps (N, K, h, w),
        from the same run (a file exported with --explain)."""
        probabilities, scores, maps = self._batched(pixels, batch_size, heat_maps=True)
        assert maps is not None
        return self._ranked(probabilities, top_k), scores, probabilities, maps

    def label_set(self, ranked: list[tuple[str, float]]) -> list[str]:
        """Of a multi-label model, the ranked labels past their thresholds."""
        threshold = dict(zip(self.labels, self.thresholds, strict=True))
        return [label for label, p in ranked if p >= threshold[label]]

    def _ranked(self, probabilities: np.ndarray, top_k: int) -> list[list[tuple[str, float]]]:
        k = max(1, min(top_k, len(self.labels)))
        ranked = []
        for row in probabilities:
            top = np.argsort(-row)[:k]
            ranked.append([(self.labels[i], float(row[i])) for i in top])
        return ranked

    def predict(
        self,
        images: str | ImagePath | Iterable[str | ImagePath],
        top_k: int = 5,
        batch_size: int = 32,
        reject: bool = False,
    ) -> list[Prediction]:
        paths = expand_image_paths(images)
        view = self.network_input if self.any_size else None
        with ThreadPoolExecutor() as pool:
            decoded = list(
                pool.map(partial(pixels_or_reason, self.preprocessing, view=view), paths)
            )
        kept = [i for i, (pixels, _) in enumerate(decoded) if pixels is not None]
        skipped = [(paths[i], error) for i, (_, error) in enumerate(decoded) if error]
        pixels = [image for image, _ in decoded if image is not None]
        probabilities, scores, _ = self._batched(pixels, batch_size)
        predictions = top_k_predictions(
            paths, kept, probabilities, skipped, self.labels, top_k, self.thresholds
        )
        if scores is not None:
            for index, score in zip(kept, scores, strict=True):
                unknown = self.is_unknown(float(score))
                predictions[index].mark_unknown(float(score), unknown, reject)
        return predictions

    def _batched(
        self, pixels: list[np.ndarray], batch_size: int, heat_maps: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Probabilities, unknown-image scores if the model has them, and with `heat_maps`
        the maps, batch by batch; maps not asked for are left uncomputed."""
        scored = "unknown_score" in self.outputs
        names = [self.outputs[0], *(["unknown_score"] if scored else [])]
        names += ["heatmap"] if heat_maps else []
        if self.any_size:  # photos of different sizes: one at a time
            runs = [self.session.run(names, {ANY_SIZE_INPUT: photo}) for photo in pixels]
        else:
            runs = [
                self.session.run(names, {"pixels": np.stack(pixels[start : start + batch_size])})
                for start in range(0, len(pixels), batch_size)
            ]
        if not runs:
            empty = np.zeros((0, len(self.labels)), np.float32)
            scores = np.zeros(0, np.float32) if self.unknown_threshold is not None else None
            return empty, scores, (np.zeros((0, len(self.labels), 0, 0)) if heat_maps else None)
        probabilities = np.concatenate([run[0] for run in runs])
        maps = np.concatenate([run[-1] for run in runs]) if heat_maps else None
        if self.unknown_threshold is None:
            return probabilities, None, maps
        return probabilities, np.concatenate([run[1] for run in runs]), maps


def _thresholds(
    path: Path, metadata: dict[str, str], labels: int, outputs: list[str]
) -> tuple[float, ...]:
    """A multi-label file's thresholds, one a label strictly between 0 and 1; () for a
    single-label file. Anything else is refused: a wrong threshold is a wrong answer."""
    if outputs[0] != SCORES_OUTPUT:
        return ()
    try:
        values = json.loads(metadata[THRESHOLDS_KEY])
        valid = isinstance(values, list) and len(values) == labels
        thresholds = tuple(float(v) for v in values) if valid else ()
    except (KeyError, TypeError, ValueError):
        thresholds = ()
    if not thresholds or not all(0 < t < 1 for t in thresholds):
        raise HeadstartError(f"{path}: a multi-label export without {labels} valid thresholds")
    return thresholds
