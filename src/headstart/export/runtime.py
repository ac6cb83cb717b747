"""Running an exported ONNX classifier with ONNX Runtime alone: no PyTorch import on this path."""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from headstart.backbones.preprocessing import Preprocessing
from headstart.errors import HeadstartError
from headstart.features.extract import pixels_or_reason
from headstart.model.prediction import Prediction, expand_image_paths, top_k_predictions
from headstart.threads import onnx_session_options


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

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities for uint8 pixels of shape (N, H, W, 3)."""
        return self.session.run(None, {"pixels": pixels})[0]

    def predict_pixels(
        self, pixels: list[np.ndarray], top_k: int = 5, batch_size: int = 32
    ) -> list[list[tuple[str, float]]]:
        """Top-k (label, probability) pairs for already decoded network inputs."""
        k = max(1, min(top_k, len(self.labels)))
        results = []
        for row in self._batched_probabilities(pixels, batch_size):
            top = np.argsort(-row)[:k]
            results.append([(self.labels[i], float(row[i])) for i in top])
        return results

    def predict(
        self, images: str | Path | Iterable[str | Path], top_k: int = 5, batch_size: int = 32
    ) -> list[Prediction]:
        paths = expand_image_paths(images)
        with ThreadPoolExecutor() as pool:
            decoded = list(pool.map(partial(pixels_or_reason, self.preprocessing), paths))
        kept = [i for i, (pixels, _) in enumerate(decoded) if pixels is not None]
        skipped = [(paths[i], error) for i, (_, error) in enumerate(decoded) if error]
        probabilities = self._batched_probabilities([decoded[i][0] for i in kept], batch_size)
        return top_k_predictions(paths, kept, probabilities, skipped, self.labels, top_k)

    def _batched_probabilities(self, pixels: list[np.ndarray], batch_size: int) -> np.ndarray:
        chunks = [
            self.probabilities(np.stack(pixels[start : start + batch_size]))
            for start in range(0, len(pixels), batch_size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, len(self.labels)), np.float32)
