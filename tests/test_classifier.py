import json

import numpy as np
import pytest
from conftest import copy_photos, real_photos
from sklearn.metrics import accuracy_score, confusion_matrix, log_loss

from headstart import Classifier, HeadstartError
from headstart.context import RunContext
from headstart.model.folder import METADATA_FILE, read_metadata, weights_path


def test_trained_model_separates_ants_from_bees(trained):
    classifier, _ = trained
    summary = classifier.info["summary"]
    assert summary["used"] == {"train": 24, "val": 16, "test": 0}
    assert summary["val_accuracy"] >= 0.75


def test_model_folder_is_safetensors_and_json_only(trained):
    _, folder = trained
    weights = weights_path(folder, read_metadata(folder))
    assert sorted(p.name for p in folder.iterdir()) == [METADATA_FILE, weights.name]
    assert weights.name.startswith("model-") and weights.suffix == ".safetensors"
    metadata = json.loads((folder / METADATA_FILE).read_text())
    assert metadata["format_version"] == 2
    assert metadata["labels"] == ["ants", "bees"]
    assert metadata["backbone"]["name"] == "efficientnet_lite0"
    assert metadata["backbone"]["weights"].startswith("sha256:")
    assert metadata["preprocessing"]["input_size"] == [288, 288]
    assert {"torch", "timm"} <= set(metadata["versions"])
    assert metadata["training"]["settings"]["seed"] == 0


def test_save_load_round_trip_predicts_identically(trained, cache_dir, tmp_path):
    classifier, folder = trained
    photos = real_photos("val", "ants", 3, skip=20) + real_photos("val", "bees", 3, skip=20)
    before = classifier.predict(photos, top_k=2)
    loaded = Classifier.load(folder, RunContext(cache_dir=cache_dir))
    after = loaded.predict(photos, top_k=2)
    assert [p.labels for p in before] == [p.labels for p in after]
    assert [p.probabilities for p in before] == [p.probabilities for p in after]
    assert all(len(p.labels) == 2 for p in after)
    assert sum(p.label == p.path.parent.name for p in after) >= 4


def test_predict_reports_unreadable_files_and_goes_on(trained, cache_dir, tmp_path):
    classifier, _ = trained
    copy_photos(real_photos("val", "bees", 2, skip=30), tmp_path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    predictions = classifier.predict(tmp_path, top_k=1)
    assert len(predictions) == 3
    broken = next(p for p in predictions if p.path.name == "broken.png")
    assert broken.error and not broken.labels
    assert all(p.labels for p in predictions if p is not broken)


def test_evaluation_matches_an_independent_computation(trained, presplit, cache_dir):
    classifier, _ = trained
    evaluation = classifier.evaluate(presplit)
    assert evaluation.split == "val" and evaluation.images == 16
    extractor = classifier.extractor()
    paths = sorted(presplit.glob("val/*/*.jpg"))
    truth = np.array([classifier.labels.index(p.parent.name) for p in paths])
    probabilities = classifier.probabilities(extractor.extract_files(paths).features)
    assert evaluation.accuracy == pytest.approx(accuracy_score(truth, probabilities.argmax(1)))
    assert evaluation.cross_entropy == pytest.approx(log_loss(truth, probabilities), rel=1e-5)
    assert evaluation.confusion == confusion_matrix(truth, probabilities.argmax(1)).tolist()
    assert sum(row["support"] for row in evaluation.per_class) == 16
    assert evaluation.top5_accuracy is None  # two classes


def test_newer_format_is_refused_clearly(trained, tmp_path):
    _, folder = trained
    newer = tmp_path / "newer"
    newer.mkdir()
    weights = weights_path(folder, read_metadata(folder))
    (newer / weights.name).write_bytes(weights.read_bytes())
    metadata = json.loads((folder / METADATA_FILE).read_text())
    (newer / METADATA_FILE).write_text(json.dumps({**metadata, "format_version": 99}))
    with pytest.raises(HeadstartError, match="format version 99 is newer"):
        Classifier.load(newer)
    with pytest.raises(HeadstartError, match="not a headstart model folder"):
        Classifier.load(tmp_path)


def test_input_size_travels_with_the_model(presplit, cache_dir, tmp_path):
    from headstart import train

    folder = tmp_path / "model"
    classifier = train(presplit, folder, input_size=256, context=RunContext(cache_dir=cache_dir))
    assert classifier.preprocessing.input_size == (256, 256)
    loaded = Classifier.load(folder, RunContext(cache_dir=cache_dir))
    assert loaded.preprocessing.input_size == (256, 256)
    photos = real_photos("val", "bees", 2, skip=30)
    ours = [p.probabilities for p in classifier.predict(photos)]
    assert ours == [p.probabilities for p in loaded.predict(photos)]
    data = photos[0].read_bytes()
    assert loaded.preprocessing.pixels(data).shape == (256, 256, 3)


def test_input_size_out_of_range_is_refused():
    from headstart.backbones import resolve_backbone

    with pytest.raises(HeadstartError, match=r"in \[32, 1024\]"):
        resolve_backbone("efficientnet_lite0", input_size=8)


def test_a_format_1_folder_still_loads(trained, cache_dir, tmp_path):
    """Folders written before the weights file was named by its hash: model.safetensors and no
    `weights` entry, format_version 1."""
    classifier, folder = trained
    old = tmp_path / "old"
    old.mkdir()
    weights = weights_path(folder, read_metadata(folder))
    (old / "model.safetensors").write_bytes(weights.read_bytes())
    metadata = json.loads((folder / METADATA_FILE).read_text())
    metadata.pop("weights")
    (old / METADATA_FILE).write_text(json.dumps({**metadata, "format_version": 1}))
    photos = real_photos("val", "bees", 3, skip=12)
    loaded = Classifier.load(old, RunContext(cache_dir=cache_dir))
    assert [p.probabilities for p in loaded.predict(photos)] == [
        p.probabilities for p in classifier.predict(photos)
    ]
