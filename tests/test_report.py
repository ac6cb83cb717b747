"""The evaluation report: files, numbers checked against scikit-learn, calibration, the page."""

import csv
import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import real_photos, usage_check
from PIL import Image
from scipy.special import softmax as scipy_softmax
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, log_loss

from headstart.evaluation.calibration import nll
from headstart.evaluation.figures import accuracy_vs_images_figure, confusion_figure
from headstart.evaluation.report import GALLERY_SIZE, write_report
from headstart.evaluation.score import evaluate
from headstart.training.temperature import fit_temperature

FIGURES = [
    "accuracy_vs_training_images",
    "confusion_counts",
    "confusion_normalised",
    "reliability",
    "training_curves",
]


@pytest.fixture(scope="module")
def report(trained, presplit, cache_dir, tmp_path_factory):
    classifier, _ = trained
    folder = tmp_path_factory.mktemp("report")
    page = write_report(classifier, presplit, folder)
    return classifier, folder, page


def test_report_folder_holds_html_pngs_json_and_csv(report):
    _, folder, page = report
    assert page == folder / "report.html"
    names = {p.name for p in folder.iterdir()}
    assert {f"{name}.png" for name in FIGURES} <= names
    assert {"metrics.json", "per_class.csv", "predictions.csv", "report.html"} <= names
    for name in FIGURES:
        assert Image.open(folder / f"{name}.png").size[0] > 300


def test_numbers_match_scikit_learn(report, presplit, cache_dir):
    classifier, folder, _ = report
    numbers = json.loads((folder / "metrics.json").read_text())
    paths = sorted(presplit.glob("val/*/*.jpg"))
    truth = np.array([classifier.labels.index(p.parent.name) for p in paths])
    features = classifier.extractor().extract_files(paths).features
    probabilities = classifier.probabilities(features)
    predicted = probabilities.argmax(1)
    assert numbers["images"] == len(paths) == 16
    assert numbers["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
    assert numbers["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(truth, predicted))
    assert numbers["cross_entropy"] == pytest.approx(log_loss(truth, probabilities), rel=1e-5)
    assert numbers["confusion"] == confusion_matrix(truth, predicted).tolist()
    rows = list(csv.DictReader(io.StringIO((folder / "predictions.csv").read_text())))
    assert len(rows) == 16
    assert sum(r["true"] == r["predicted"] for r in rows) == int(np.sum(predicted == truth))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return scipy_softmax(logits / temperature, axis=1)


def test_temperature_scaling_lowers_validation_nll(trained):
    classifier, _ = trained
    fitted = classifier.calibration
    assert fitted.val_nll_after <= fitted.val_nll_before + 1e-9
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 400)
    logits = rng.normal(size=(400, 4))
    logits[np.arange(400), truth] += 1.0
    overconfident = logits * 6  # right often, far too sure always
    temperature = fit_temperature(overconfident, truth)
    assert temperature > 2
    fitted_nll = nll(softmax(overconfident, temperature), truth)
    assert fitted_nll < 0.8 * nll(softmax(overconfident), truth)
    grid = np.geomspace(0.05, 20, 2000)  # the minimiser, not just an improvement
    best = min(grid, key=lambda t: nll(softmax(overconfident, t), truth))
    assert fitted_nll <= nll(softmax(overconfident, best), truth) + 1e-6
    assert temperature == pytest.approx(best, rel=0.01)


def test_predict_uses_the_fitted_temperature(trained, cache_dir):
    """predict's probabilities are the softmax of the logits over the fitted temperature,
    computed here independently (scipy), and not the uncalibrated ones."""
    from scipy.special import softmax as reference

    classifier, _ = trained
    photos = real_photos("daisy", 2, skip=20) + real_photos("sunflower", 2, skip=20)  # held out
    features = classifier.extractor().extract_files(photos).features
    logits = classifier.logits(features).astype(np.float64)
    temperature = classifier.temperature
    assert abs(temperature - 1) > 0.05  # fitted; at 1.0 this test could not tell
    predicted = [p.probabilities[0] for p in classifier.predict(photos)]  # the top label's
    np.testing.assert_allclose(predicted, reference(logits / temperature, axis=1).max(1), 1e-5)
    assert not np.allclose(predicted, reference(logits, axis=1).max(1), rtol=1e-3)


def test_html_is_self_contained(report):
    _, _, page = report
    text = page.read_text()
    assert not re.search(r"https?://", text)
    assert not re.search(r"""(src|href)=['"]?(?!data:)[^'" >]""", text)
    assert text.count("data:image/png;base64,") == len(FIGURES)
    assert text.count("<figure") <= 2 * GALLERY_SIZE


def test_confusion_figure_stays_readable_with_100_classes():
    labels = [f"class_{i:03d}" for i in range(100)]
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 3, (100, 100)) + np.diag(rng.integers(5, 20, 100))
    png = Image.open(io.BytesIO(confusion_figure(confusion, labels, normalised=True)))
    assert png.size[0] >= 1500  # the figure grows with the classes instead of squeezing labels


def test_class_names_with_dollar_signs_are_drawn_as_text():
    """Before: matplotlib parsed `cost_$5_to_$10` as a formula, and the report was a traceback."""
    labels = ["cost_$5_to_$10", "$$", "a$^$b", "x_{1}$"]
    confusion = np.diag([3, 4, 5, 6])
    for normalised in (False, True):
        png = Image.open(io.BytesIO(confusion_figure(confusion, labels, normalised)))
        assert png.size[0] > 100
    per_class = [{"label": label, "recall": 0.5, "support": 2} for label in labels]
    Image.open(io.BytesIO(accuracy_vs_images_figure(per_class, dict.fromkeys(labels, 3))))


@pytest.mark.slow
def test_report_command(trained, presplit, cache_dir, tmp_path):
    _, folder = trained
    command = [sys.executable, "-m", "headstart.cli", "evaluate", str(folder), str(presplit)]
    command += ["--report", str(tmp_path / "r"), "--cache-dir", str(cache_dir), "-q"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "r" / "report.html").is_file()


@pytest.mark.slow  # scores with four test-time views, twice
def test_evaluate_with_a_report_scores_once_and_keeps_tta(trained, presplit, tmp_path, capsys):
    """Before: `evaluate --report` ran the report command, which scored again without --tta."""
    classifier, folder = trained
    command = ["evaluate", str(folder), str(presplit), "--tta", "--json"]
    result = usage_check(*command, "--report", str(tmp_path / "r"), capsys=capsys)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)["cross_entropy"]
    reported = json.loads((tmp_path / "r" / "metrics.json").read_text())["cross_entropy"]
    averaged = evaluate(classifier, presplit, tta=True).cross_entropy
    assert printed == pytest.approx(reported) == pytest.approx(averaged)
    assert averaged != pytest.approx(evaluate(classifier, presplit).cross_entropy, rel=1e-4)


def test_galleries_show_each_photo_with_its_heat_map(report, presplit, tmp_path):
    from headstart.data.images import thumbnail_base64 as plain_thumbnail
    from headstart.evaluation.overlays import thumbnail_base64

    classifier, _, page = report
    html = page.read_text()
    shown = re.findall(
        r"<figure title='([^']+)'><img alt='[^']*' src='data:image/jpeg;base64,([^']+)'", html
    )
    assert shown and "speaks for that label" in html and "nearest training photos" in html
    path, drawn = shown[0]
    explanation = classifier.explain([path])[0]
    assert drawn == thumbnail_base64(explanation, 128) != plain_thumbnail(path, 128)
    plain = write_report(classifier, presplit, tmp_path / "plain", heat_maps=False).read_text()
    assert "speaks for" not in plain and plain_thumbnail(path, 128) in plain
