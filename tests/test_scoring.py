"""Evaluation says what it scored: the held-out split of the training data, every image of any
other data, and never a copy of a training image without saying so (issue 14, part 1)."""

import json
import shutil
import warnings

import numpy as np
import pytest
from conftest import copy_photos, real_photos

from headstart import HeadstartError, evaluate
from headstart.context import RunContext
from headstart.data.sources import load_dataset
from headstart.evaluation.metrics import evaluate_probabilities


def held_out_folder(root, daisy: int = 6, sunflower: int = 6):
    """Photos the `trained` fixture never saw, as class folders."""
    copy_photos(real_photos("daisy", daisy, skip=20), root / "daisy")
    copy_photos(real_photos("sunflower", sunflower, skip=20), root / "sunflower")
    return root


def test_the_training_dataset_is_scored_on_its_held_out_split(trained, presplit, cache_dir):
    classifier, _ = trained
    evaluation = evaluate(classifier, presplit)
    assert evaluation.split == "val" and evaluation.images == 16
    assert "the val split of the training dataset" in evaluation.scope
    assert evaluation.duplicates == []


def test_any_other_folder_is_scored_whole(trained, cache_dir, tmp_path):
    """Before: only the tenth that the hash split called 'test' was scored, silently."""
    classifier, _ = trained
    folder = held_out_folder(tmp_path / "heldout")
    evaluation = evaluate(classifier, folder)
    assert evaluation.split == "all" and evaluation.images == 12
    assert evaluation.scope.startswith("scored 12 images: every image in")


def test_copies_of_training_images_are_named_and_left_out(trained, presplit, cache_dir, tmp_path):
    classifier, _ = trained
    folder = held_out_folder(tmp_path / "leaky")
    leaked = sorted((presplit / "train" / "daisy").iterdir())[:3]
    for photo in leaked:
        shutil.copy(photo, folder / "daisy" / f"copy-{photo.name}")
    evaluation = evaluate(classifier, folder)
    assert evaluation.images == 12
    assert sorted(p.rsplit("/", 1)[1] for p in evaluation.duplicates) == sorted(
        f"copy-{p.name}" for p in leaked
    )
    assert "3 identical to training images, left out" in evaluation.scope
    kept = evaluate(classifier, folder, keep_duplicates=True)
    assert kept.images == 15 and "3 identical to training images, kept" in kept.scope


def test_a_moved_copy_of_the_training_data_scores_only_unseen_images(
    trained, presplit, cache_dir, tmp_path
):
    classifier, _ = trained
    moved = tmp_path / "moved"
    shutil.copytree(presplit, moved)
    evaluation = evaluate(classifier, moved)
    assert evaluation.split == "all" and evaluation.images == 16  # the validation photos
    assert len(evaluation.duplicates) == 24  # every training photo, recognised by content
    shutil.rmtree(moved / "val")
    with pytest.raises(HeadstartError, match="all 24 readable images are identical"):
        evaluate(classifier, moved)


def test_undefined_per_class_scores_are_none_and_quiet():
    truth = np.array([0, 0, 1, 1])
    probabilities = np.array([[0.9, 0.1, 0], [0.8, 0.2, 0], [0.3, 0.7, 0], [0.6, 0.4, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's UndefinedMetricWarning would raise
        evaluation = evaluate_probabilities(probabilities, truth, ["a", "b", "c"])
    absent = evaluation.per_class[2]
    assert absent["support"] == 0
    assert absent["precision"] is None and absent["recall"] is None and absent["f1"] is None
    assert evaluation.per_class[1]["precision"] == 1.0


def test_trainval_is_a_training_folder(tmp_path):
    for split in ("trainval", "test"):
        for label in ("daisy", "sunflower"):
            copy_photos(real_photos(label, 6, skip=20), tmp_path / split / label)
    dataset = load_dataset(tmp_path)
    assert dataset.given_splits == {"train", "test"}
    assert dataset.counts()["test"] == 12 and dataset.counts()["val"] > 0


@pytest.mark.slow
def test_a_hashed_test_split_that_training_ignores_is_said(cache_dir, tmp_path):
    from headstart import train

    for label in ("daisy", "sunflower"):
        copy_photos(real_photos(label, 20), tmp_path / "data" / label)
    classifier = train(tmp_path / "data", context=RunContext(cache_dir=cache_dir))
    held_out = classifier.summary.used["test"]
    assert held_out > 0
    assert any(
        f"{held_out} images (10%) were held out" in note for note in classifier.summary.notes
    )
    no_test = train(tmp_path / "data", context=RunContext(cache_dir=cache_dir), test_percent=0)
    assert no_test.summary.used["test"] == 0
    assert not [note for note in no_test.summary.notes if "held out" in note]


def test_report_shows_what_the_model_trained_on(trained, cache_dir, tmp_path):
    from headstart.evaluation.report import write_report

    classifier, _ = trained
    folder = held_out_folder(tmp_path / "heldout")
    write_report(classifier, folder, tmp_path / "report")
    numbers = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert numbers["images_per_split"] == classifier.summary.used
    assert numbers["images"] == 12 and "every image in" in numbers["scope"]
    assert "every image in" in (tmp_path / "report" / "report.html").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("flag", [[], ["--keep-duplicates"]])
def test_evaluate_prints_what_it_scored(trained, cache_dir, tmp_path, flag):
    import subprocess
    import sys

    _, model = trained
    folder = held_out_folder(tmp_path / "heldout", 3, 3)
    command = [sys.executable, "-m", "headstart.cli", "evaluate", str(model), str(folder)]
    result = subprocess.run(
        [*command, *flag, "--cache-dir", str(cache_dir)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "scored 6 images: every image in" in result.stderr
