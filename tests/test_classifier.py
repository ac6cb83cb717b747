import json

import numpy as np
import pytest
from conftest import DATA, copy_photos, real_photos
from sklearn.metrics import accuracy_score, confusion_matrix, log_loss

from headstart import Classifier, FitSettings, HeadstartError, train
from headstart.context import RunContext
from headstart.evaluation.score import evaluate
from headstart.model.folder import METADATA_FILE, read_metadata, weights_path


def test_trained_model_separates_daisies_from_sunflowers(trained):
    classifier, _ = trained
    summary = classifier.summary
    assert summary.used == {"train": 24, "val": 16, "test": 0}
    assert summary.val_accuracy >= 0.75


def test_model_folder_is_safetensors_and_json_only(trained):
    _, folder = trained
    weights = weights_path(folder, read_metadata(folder))
    assert sorted(p.name for p in folder.iterdir()) == [METADATA_FILE, weights.name]
    assert weights.name.startswith("model-") and weights.suffix == ".safetensors"
    metadata = json.loads((folder / METADATA_FILE).read_text())
    assert metadata["format_version"] == 2
    assert metadata["labels"] == ["daisy", "sunflower"]
    assert metadata["backbone"]["name"] == "efficientnet_lite0"
    assert metadata["backbone"]["weights"].startswith("sha256:")
    assert metadata["preprocessing"]["input_size"] == [224, 224]  # 227 px photos: not enlarged
    assert {"torch", "timm"} <= set(metadata["versions"])
    assert metadata["training"]["settings"]["seed"] == 0


def test_save_load_round_trip_predicts_identically(trained, cache_dir, tmp_path):
    classifier, folder = trained
    photos = real_photos("daisy", 3, skip=20) + real_photos("sunflower", 3, skip=20)
    before = classifier.predict(photos, top_k=2)
    loaded = Classifier.load(folder, RunContext(cache_dir=cache_dir))
    after = loaded.predict(photos, top_k=2)
    assert [p.labels for p in before] == [p.labels for p in after]
    assert [p.probabilities for p in before] == [p.probabilities for p in after]
    assert all(len(p.labels) == 2 for p in after)
    assert sum(p.label == p.path.parent.name for p in after) >= 4


def test_predict_reports_unreadable_files_and_goes_on(trained, cache_dir, tmp_path):
    classifier, _ = trained
    copy_photos(real_photos("sunflower", 2, skip=30), tmp_path)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    predictions = classifier.predict(tmp_path, top_k=1)
    assert len(predictions) == 3
    broken = next(p for p in predictions if p.path.name == "broken.png")
    assert broken.error and not broken.labels
    assert all(p.labels for p in predictions if p is not broken)


def test_evaluation_matches_an_independent_computation(trained, presplit, cache_dir):
    classifier, _ = trained
    evaluation = evaluate(classifier, presplit)
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
    photos = real_photos("sunflower", 2, skip=30)
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
    photos = real_photos("sunflower", 3, skip=23)
    loaded = Classifier.load(old, RunContext(cache_dir=cache_dir))
    assert [p.probabilities for p in loaded.predict(photos)] == [
        p.probabilities for p in classifier.predict(photos)
    ]


def test_a_folder_an_earlier_release_wrote_predicts_as_it_did(cache_dir):
    """tests/data/models/49a5a37: a model folder, and its predictions, written by the release
    before the typed record's last changes (timm's stage API, heads in model/, SciPy's
    softmax): loaded today, the same labels, probabilities and unknown scores."""
    release = DATA / "models" / "49a5a37"
    expected = json.loads((release / "predictions.json").read_text())
    loaded = Classifier.load(release / "model", RunContext(cache_dir=cache_dir))
    photos = [DATA / "flowers" / row["photo"] for row in expected]
    for row, prediction in zip(expected, loaded.predict(photos, top_k=2), strict=True):
        assert prediction.labels == row["labels"]
        np.testing.assert_allclose(prediction.probabilities, row["probabilities"], atol=1e-6)
        assert prediction.unknown_score == pytest.approx(row["unknown_score"], abs=1e-5)


@pytest.mark.slow
def test_a_model_from_before_stage_pooling_predicts_as_it_did(
    presplit, cache_dir, monkeypatch, tmp_path
):
    """Models written before the features pooled stages 3-6 keep their 1,280 features."""
    import headstart.backbones.registry as registry

    monkeypatch.setattr(registry, "DEFAULT_POOLED_STAGES", ())
    context = RunContext(cache_dir=cache_dir)
    old = train(presplit, settings=FitSettings(seed=0), context=context)
    assert old.backbone.pooled_stages == () and old.head_config.in_features == 1280
    monkeypatch.undo()
    folder = old.save(tmp_path / "pre-stages-model")
    written = json.loads((folder / "headstart.json").read_text())
    assert "pooled_stages" not in written["backbone"]  # as models were written before
    loaded = Classifier.load(folder, context)
    photos = real_photos("daisy", 3, skip=17)
    assert [p.probabilities for p in loaded.predict(photos)] == [
        p.probabilities for p in old.predict(photos)
    ]
    assert train(presplit, context=context).head_config.in_features == 1984


@pytest.mark.slow
def test_small_photos_are_not_enlarged_past_the_pretrained_size(cache_dir, tmp_path):
    """Photos whose typical shorter side is under 288 px are fed at 224 (measured: flowers5's
    227 px photos 93.8% -> 95.0%), and the summary says why; --input-size still decides."""
    from PIL import Image

    from headstart.data.images import typical_short_side

    for label in ("daisy", "sunflower"):
        for photo in real_photos(label, 8):
            small = tmp_path / "small" / label / photo.name
            small.parent.mkdir(parents=True, exist_ok=True)
            Image.open(photo).convert("RGB").resize((200, 150)).save(small)
    (tmp_path / "small" / "daisy" / "broken.jpg").write_bytes(b"not an image")
    assert typical_short_side(sorted((tmp_path / "small").rglob("*.jpg"))) == 150
    context = RunContext(cache_dir=cache_dir)
    chosen = train(tmp_path / "small", context=context, val_percent=25, test_percent=0)
    assert chosen.preprocessing.input_size == (224, 224)
    assert any("typical shorter side is 150 px" in n for n in chosen.summary.notes)
    given = train(
        tmp_path / "small", context=context, input_size=288, val_percent=25, test_percent=0
    )
    assert given.preprocessing.input_size == (288, 288)
    assert not any("shorter side" in n for n in given.summary.notes)


def test_the_record_reads_back_exactly_what_was_written(trained):
    """Every part of headstart.json is a typed field: reading and writing it loses nothing."""
    from headstart.model.record import ModelRecord

    classifier, folder = trained
    written = json.loads((folder / "headstart.json").read_text())
    record = ModelRecord.from_dict(written, folder)
    folder_keys = {"format", "format_version", "weights", "versions"}
    assert record.to_dict() == {k: v for k, v in written.items() if k not in folder_keys}
    assert record.summary.used["train"] == 24 and record.training.split.val_percent == 10.0
    assert classifier.temperature == record.calibration.temperature > 0
    assert classifier.unknown.stats == record.unknown  # one copy of the statistics
    with pytest.raises(TypeError):
        classifier.info["summary"] = {}  # the old dict view is read-only


def test_a_model_with_few_validation_photos_learns_from_them_too(cache_dir, tmp_path):
    """Class folders of 36 photos each, split by hash: under 100 validation photos, the choices
    come from 5 folds over training and validation, the head is fitted on both, the unknown
    score's bank holds both, and evaluation scores the test split, nothing it was fitted on."""
    from conftest import copy_photos

    from headstart import RunContext, load_dataset, train
    from headstart.training.solver import fit_linear

    for label in ("daisy", "sunflower"):
        copy_photos(real_photos(label, 36), tmp_path / "data" / label)
    context = RunContext(cache_dir=cache_dir)
    classifier = train(tmp_path / "data", context=context)
    dataset = load_dataset(tmp_path / "data")
    fitted = dataset.split("train") + dataset.split("val")
    assert 0 < len(dataset.split("val")) < 100 and len(dataset.split("test")) > 0
    note = next(n for n in classifier.summary.notes if "cross-validation" in n)
    assert f"5-fold cross-validation over the {len(fitted)} training and validation" in note
    assert f"fitted on all {len(fitted)}" in note
    extracted = classifier.extractor().extract_files([sample.path for sample in fitted])
    labels = np.array([classifier.labels.index(sample.label) for sample in fitted])
    weight = classifier.head.parameters["1.weight"]
    width = int(np.flatnonzero(np.abs(weight).sum(0))[-1]) + 1  # the features the head uses
    x = extracted.features[:, :width]
    direct = fit_linear(x, labels, x[:0], labels[:0], 2, l2=classifier.summary.l2)
    assert np.allclose(weight[:, :width], direct.weight, atol=1e-4)
    assert classifier.unknown is not None and classifier.unknown.stats.bank_size == len(fitted)
    # copies of any photo it was fitted on, validation included, are left out of evaluations
    assert len(classifier.training_digests["train"]) == len(fitted)
    scored = classifier.evaluation_set(tmp_path / "data")
    assert scored.split == "test" and not scored.duplicates
    assert len(scored.labelled.y) == len(dataset.split("test"))


def test_without_a_test_split_the_validation_photos_stay_unseen(trained, presplit):
    """Train and val folders only: `evaluate` scores the validation split, so the head is
    fitted on the training photos alone and validation chooses, as before."""
    classifier, _ = trained
    assert not any("cross-validation" in note for note in classifier.summary.notes)
    scored = classifier.evaluation_set(presplit)
    assert scored.split == "val" and not scored.duplicates and len(scored.labelled.y) == 16


def test_another_head_of_the_same_shape_replaces_the_head_alone(trained):
    from dataclasses import replace

    from headstart.model.heads import Head

    classifier, _ = trained
    parameters = {name: -value for name, value in classifier.head.parameters.items()}
    flipped = classifier.with_head(Head(classifier.head.config, parameters))
    photos = real_photos("daisy", 2, skip=24)
    assert [p.labels[0] for p in flipped.predict(photos, top_k=1)] == ["sunflower"] * 2
    assert [p.labels[0] for p in classifier.predict(photos, top_k=1)] == ["daisy"] * 2
    assert flipped.extractor() is classifier.extractor()  # the backbone is not loaded again
    other = replace(classifier.head.config, num_classes=3)
    with pytest.raises(HeadstartError, match="cannot replace"):
        classifier.with_head(Head(other, {k: np.zeros(s) for k, s in other.shapes().items()}))
