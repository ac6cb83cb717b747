"""Several labels a photo: listings, the sigmoid head, thresholds, and every stage (train,
evaluate, report, predict, export, serve, doctor) on 2x2 mosaics of real photos."""

import csv
import json
import math
import os

import numpy as np
import pytest
from conftest import CHROMEDRIVER, CHROMIUM, XRAYS, copy_photos, headstart, real_photos, running

from headstart import FitSettings, RunContext, train
from headstart.data import load_dataset
from headstart.data.mosaics import write_mosaics
from headstart.errors import HeadstartError
from headstart.evaluation.multilabel import f1_thresholds
from headstart.model.classifier import Classifier
from headstart.model.folder import METADATA_FILE

LABELS = ["daisy", "sunflower", "xray"]


@pytest.fixture(scope="module")
def mosaics(tmp_path_factory):
    """120 mosaics of daisies, sunflowers and X-rays (1 to 3 kinds each), split by photo."""
    species = tmp_path_factory.mktemp("species")
    copy_photos(real_photos("daisy", 36), species / "daisy")
    copy_photos(real_photos("sunflower", 36), species / "sunflower")
    copy_photos(XRAYS, species / "xray")
    return write_mosaics(
        species, tmp_path_factory.mktemp("mosaics"), tile=112, per_photo=1.5,
        val_percent=20, test_percent=20,
    )  # fmt: skip


@pytest.fixture(scope="module")
def model(mosaics, cache_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("multi") / "model"
    context = RunContext(cache_dir=cache_dir)
    settings = FitSettings(strategy="linear", seed=0)
    classifier = train(mosaics.listing, folder, settings=settings, context=context)
    return classifier, folder


def listing(tmp_path, lines: list[str], name: str = "labels.csv"):
    for photo in real_photos("daisy", 3) + real_photos("sunflower", 3):
        copy_photos([photo], tmp_path)
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def names(kind: str, count: int = 3) -> list[str]:
    return [p.name for p in real_photos(kind, count)]


def test_label_sets_by_semicolon_by_space_under_a_labels_header_and_one_hot(tmp_path):
    d, s = names("daisy"), names("sunflower")
    semicolons = listing(tmp_path, [f"{d[0]},daisy;sunflower", f"{d[1]},daisy", f"{s[0]},sunflower",
                                    f"{s[1]},sunflower ; daisy", f"{d[2]},daisy"])  # fmt: skip
    dataset = load_dataset(semicolons)
    assert dataset.multi_label and dataset.classes == ["daisy", "sunflower"]
    assert [s.labels for s in dataset.samples][:2] == [("daisy", "sunflower"), ("daisy",)]
    assert dataset.samples[3].labels == ("daisy", "sunflower")  # one set, whatever the order

    spaces = listing(tmp_path, ["path,labels,split", f'{d[0]},"daisy, sunflower",train',
                                f"{d[1]},,train", f"{s[0]},sunflower,val", f"{d[2]},daisy,val",
                                f"{s[1]},sunflower daisy,test"], "spaces.csv")  # fmt: skip
    dataset = load_dataset(spaces)
    assert dataset.multi_label and dataset.samples[1].labels == ()  # no label: all negatives
    assert dataset.samples[0].labels == ("daisy", "sunflower")
    assert [s.split for s in dataset.samples] == ["train", "train", "val", "val", "test"]

    bars = listing(tmp_path, ["image_name,tags", *(f"{n},daisy|sunflower" for n in d + s)],
                   "bars.csv")  # fmt: skip
    assert load_dataset(bars).samples[0].labels == ("daisy", "sunflower")

    hot = listing(tmp_path, ["path,daisy,sunflower", f"{d[0]},1,1", f"{d[1]},1,0",
                             f"{s[0]},0,1", f"{s[1]},0,0", f"{d[2]},1,0", f"{s[2]},0,1"],
                  "hot.csv")  # fmt: skip
    dataset = load_dataset(hot)
    assert dataset.layout == "one-hot csv" and dataset.multi_label
    assert [s.labels for s in dataset.samples][:4] == [
        ("daisy", "sunflower"), ("daisy",), ("sunflower",), (),
    ]  # fmt: skip


def test_single_label_listings_read_as_before_and_the_flag_asks_for_sets(tmp_path):
    d, s = names("daisy"), names("sunflower")
    plain = listing(tmp_path, ["path,label", *(f"{n},daisy" for n in d),
                               *(f"{n},golden sunflower" for n in s)])  # fmt: skip
    dataset = load_dataset(plain)
    assert not dataset.multi_label and dataset.classes == ["daisy", "golden sunflower"]
    assert all(sample.labels is None for sample in dataset.samples)
    asked = load_dataset(plain, multi_label=True)  # spaces now separate labels
    assert asked.multi_label and asked.classes == ["daisy", "golden", "sunflower"]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["path,daisy,sunflower", "{d},1,2"], "line 2: '2' in a one-hot column"),
        (["path,daisy,daisy", "{d},1,0"], "line 1: a label column is named twice"),
        (["path,daisy,sunflower", "{d},1"], "line 2: 2 cells for 3 columns"),
        (["path,label", "{d},"], "line 2: no label"),
        (["path,labels", "{d},daisy;rose", "{s},daisy"], "class 'rose' has 1 image"),
        (["path,labels", "{d},", "{s},"], "no image has a label"),
    ],
)
def test_bad_label_listings_are_one_line_naming_the_line(tmp_path, lines, message):
    d, s = names("daisy", 1)[0], names("sunflower", 1)[0]
    path = listing(tmp_path, [line.format(d=d, s=s) for line in lines])
    with pytest.raises(HeadstartError) as error:
        load_dataset(path)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_f1_thresholds_maximise_each_labels_f1():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    truth = (rng.random((200, 4)) < [0.5, 0.2, 0.05, 0]).astype(np.float32)
    truth[7, 3] = 1.0
    scores = np.round(truth * 0.3 + rng.random((200, 4)) * 0.7, 1)  # ties, as real scores have
    chosen = f1_thresholds(scores, truth)
    for k in range(3):
        best = max(f1_score(truth[:, k], scores[:, k] >= t) for t in np.unique(scores[:, k]))
        assert f1_score(truth[:, k], scores[:, k] >= chosen[k]) == pytest.approx(best)
    assert chosen[3] == 0.5  # one positive: no threshold is fitted to it


def test_the_sigmoid_head_is_scikit_learns_logistic_regression_a_label(model, mosaics):
    from scipy.special import expit, log_expit
    from sklearn.linear_model import LogisticRegression

    from headstart.training.solver import fit_linear

    classifier, _ = model
    train_set = classifier.evaluation_set(mosaics.listing, "train", keep_duplicates=True)
    x, y = train_set.labelled.x, train_set.labelled.y
    assert y.shape == (len(x), 3)
    l2 = 1e-2
    fit = fit_linear(x, y, x[:0], y[:0], 3, l2=l2, multi_label=True)

    def objective(weight, bias, k):  # scikit-learn's, over n: mean log-loss plus L2
        z = x.astype(np.float64) @ weight + bias
        return (
            -(y[:, k] * log_expit(z) + (1 - y[:, k]) * log_expit(-z)).mean()
            + l2 / 2 * (weight.astype(np.float64) ** 2).sum()
        )

    for k in range(3):
        reference = LogisticRegression(C=1 / (l2 * len(y)), tol=1e-10, max_iter=10_000)
        reference.fit(x, y[:, k])
        theirs = objective(reference.coef_[0], reference.intercept_[0], k)
        assert objective(fit.weight[k], fit.bias[k], k) <= theirs * (1 + 1e-4)  # as low
        ours = expit(x @ fit.weight[k] + fit.bias[k])
        np.testing.assert_allclose(ours, reference.predict_proba(x)[:, 1], atol=2e-3)


def test_mosaics_train_as_multi_label_with_a_threshold_a_label(model):
    classifier, folder = model
    assert classifier.multi_label and classifier.labels == LABELS
    assert len(classifier.thresholds) == 3 and all(0 < t < 1 for t in classifier.thresholds)
    notes = " ".join(classifier.summary.notes)
    assert "multi-label: 3 labels" in notes and "threshold maximises its F1" in notes
    assert classifier.summary.val_map > 0.8 and classifier.summary.val_accuracy is None
    assert classifier.summary.multi_label
    record = json.loads((folder / METADATA_FILE).read_text())
    assert record["thresholds"] == list(classifier.thresholds)
    reloaded = Classifier.load(folder)
    assert reloaded.thresholds == classifier.thresholds and reloaded.multi_label


def test_predictions_are_the_labels_past_their_thresholds(model, mosaics):
    classifier, folder = model
    test = [row for row in csv.reader(mosaics.listing.read_text().splitlines()) if row[2] == "test"]
    photos = [mosaics.listing.parent / row[0] for row in test]
    predictions = Classifier.load(folder, classifier.context).predict(photos, top_k=2)
    right = 0
    for prediction, row in zip(predictions, test, strict=True):
        passed = [k for k, t in zip(LABELS, classifier.thresholds, strict=True)
                  if prediction.scores[k] >= t]  # fmt: skip
        assert sorted(prediction.label_set) == passed
        scores = [prediction.scores[k] for k in prediction.label_set]
        assert scores == sorted(scores, reverse=True) and len(prediction.labels) == 2
        right += sum((k in prediction.label_set) == (k in row[1].split()) for k in LABELS)
    assert right / (3 * len(test)) > 0.75  # label decisions right, on photos it never saw
    shown = predictions[0].to_dict()
    assert set(shown) >= {"labels", "scores", "top", "unknown"} and "label" not in shown


def test_evaluate_scores_map_f1_and_exact_sets_as_scikit_learn_does(model, mosaics):
    from sklearn.metrics import average_precision_score, f1_score

    from headstart.evaluation.score import score

    classifier, _ = model
    scored = score(classifier, mosaics.listing)
    evaluation, truth, p = scored.evaluation, scored.photos.labelled.y, scored.probabilities
    assert scored.photos.split == "test" and evaluation.images == mosaics.mosaics["test"]
    shown = [k for k in range(3) if truth[:, k].any()]
    expected = np.mean([average_precision_score(truth[:, k], p[:, k]) for k in shown])
    assert evaluation.mAP == pytest.approx(expected) and evaluation.mAP > 0.85
    given = p >= np.array(classifier.thresholds)
    assert evaluation.micro_f1 == pytest.approx(f1_score(truth, given, average="micro"))
    assert evaluation.exact_match == pytest.approx((given == (truth > 0.5)).all(1).mean())
    assert [row["label"] for row in evaluation.per_label] == LABELS


def test_evaluate_report_and_predict_commands(model, mosaics, cache_dir, tmp_path):
    _, folder = model
    done = headstart("evaluate", str(folder), str(mosaics.listing), "--json", cache_dir=cache_dir)
    assert done.returncode == 0, done.stderr
    scores = json.loads(done.stdout)
    assert {"mAP", "micro_f1", "macro_f1", "exact_match", "per_label"} <= set(scores)
    assert {"average_precision", "precision", "recall", "f1", "support", "threshold"} <= set(
        scores["per_label"][0]
    )
    report = tmp_path / "report"
    done = headstart("report", str(folder), str(mosaics.listing), "-o", str(report),
                     cache_dir=cache_dir)  # fmt: skip
    assert done.returncode == 0, done.stderr
    page = (report / "report.html").read_text()
    assert "mAP" in page and "Worst mistakes per label" in page and "<h3>xray</h3>" in page
    assert json.loads((report / "metrics.json").read_text())["mAP"] == pytest.approx(scores["mAP"])
    rows = list(csv.DictReader((report / "per_label.csv").open()))
    assert [row["label"] for row in rows] == LABELS
    assert (report / "precision_recall.png").stat().st_size > 10_000
    photo = next((mosaics.listing.parent / "images" / "test").iterdir())
    done = headstart("predict", str(folder), str(photo), "--json", cache_dir=cache_dir)
    assert done.returncode == 0, done.stderr
    [shown] = json.loads(done.stdout)
    assert set(shown["scores"]) == set(LABELS) and len(shown["top"]) == 3
    done = headstart("info", str(folder))
    assert done.returncode == 0 and "multi-label thresholds" in done.stdout, done.stderr


def test_onnx_export_gives_the_model_folders_scores_and_thresholds(model, mosaics, tmp_path):
    from headstart.export.onnx import export_classifier
    from headstart.export.runtime import OnnxClassifier

    classifier, _ = model
    runtime = OnnxClassifier(export_classifier(classifier, tmp_path / "multi.onnx"))
    assert runtime.multi_label and runtime.thresholds == pytest.approx(classifier.thresholds)
    assert runtime.outputs[:2] == ("scores", "unknown_score")
    photos = sorted((mosaics.listing.parent / "images" / "test").iterdir())
    theirs, ours = runtime.predict(photos), classifier.predict(photos)
    gaps = [abs(a.scores[k] - b.scores[k]) for a, b in zip(theirs, ours, strict=True)
            for k in LABELS]  # fmt: skip
    assert max(gaps) < 1e-4  # every test photo
    assert [a.label_set for a in theirs] == [b.label_set for b in ours]
    assert [a.unknown for a in theirs] == [b.unknown for b in ours]


def test_the_server_and_its_page_answer_with_the_label_set(model, mosaics, tmp_path):
    from fastapi.testclient import TestClient

    from headstart.export.onnx import export_classifier
    from headstart.export.runtime import OnnxClassifier
    from headstart.serving.app import create_app

    classifier, _ = model
    runtime = OnnxClassifier(export_classifier(classifier, tmp_path / "served.onnx"))
    client = TestClient(create_app(runtime))
    metadata = client.get("/metadata").json()
    assert metadata["multi_label"] and metadata["thresholds"] == pytest.approx(
        classifier.thresholds
    )
    photos = sorted((mosaics.listing.parent / "images" / "test").iterdir())[:3]
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    answer = client.post("/predict?top_k=1", files=files).json()["predictions"]
    for served, expected in zip(answer, runtime.predict(photos), strict=True):
        assert served["labels"] == expected.label_set and len(served["top"]) == 1
    assert "any number a photo" in client.get("/").text or "multi_label" in client.get("/").text


def test_record_and_export_thresholds_are_checked_on_load(model, tmp_path):
    import shutil

    import onnx

    from headstart.export.onnx import export_classifier
    from headstart.export.runtime import OnnxClassifier

    classifier, folder = model
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    record = json.loads((copy / METADATA_FILE).read_text())
    for wrong in ([0.0, 0.5, 0.5], [0.5, 1.0, 0.5], [0.5, 0.5], [0.5, "x", 0.5], 0.5):
        (copy / METADATA_FILE).write_text(json.dumps({**record, "thresholds": wrong}))
        with pytest.raises(HeadstartError, match="thresholds: must be 3 numbers"):
            Classifier.load(copy)
    (copy / METADATA_FILE).write_text(json.dumps(record).replace('"thresholds"', '"t"'))
    assert not Classifier.load(copy).multi_label  # an older reader's view: a softmax model
    exported = export_classifier(classifier, tmp_path / "m.onnx")
    graph = onnx.load(str(exported))
    for prop in graph.metadata_props:
        if prop.key == "headstart.thresholds":
            prop.value = json.dumps([math.nan, 0.5, 0.5])
    onnx.save(graph, str(exported))
    with pytest.raises(HeadstartError, match="without 3 valid thresholds"):
        OnnxClassifier(exported)


def test_a_single_label_model_refuses_label_sets_to_score(trained, mosaics):
    from headstart.evaluation.score import evaluate

    classifier, _ = trained
    assert not classifier.multi_label and classifier.thresholds == ()
    with pytest.raises(HeadstartError, match="lists several labels a photo; this model gives one"):
        evaluate(classifier, mosaics.listing)


def test_what_takes_one_label_a_photo_refuses_a_multi_label_model(model, mosaics, tmp_path):
    from headstart.export.coreml import export_coreml
    from headstart.export.quantize import check_calibration_classes
    from headstart.labelling.suggest import suggest

    classifier, _ = model
    for run in (
        lambda: suggest(real_photos("daisy", 2, skip=30), 1, model=classifier),
        lambda: export_coreml(classifier, tmp_path / "m.mlpackage"),
        lambda: check_calibration_classes(classifier, mosaics.listing),
    ):
        with pytest.raises(HeadstartError, match="takes single-label models"):
            run()
    assert not (tmp_path / "m.mlpackage").exists()


def test_the_doctor_finds_labels_given_wrongly_or_left_out(mosaics, cache_dir, tmp_path):
    from headstart.doctor.run import diagnose

    rows = list(csv.reader(mosaics.listing.read_text().splitlines()))
    planted = {}
    for row in rows[1:]:
        shown = row[1].split()
        if len(planted) < 4 and row[2] == "train" and shown in (["daisy"], ["sunflower"]):
            row[1] = "daisy sunflower" if len(planted) % 2 else "xray " + shown[0]
            planted[row[0]] = row[1]
    edited = mosaics.listing.with_name("planted.csv")
    with edited.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    diagnosis = diagnose(edited, context=RunContext(cache_dir=cache_dir))
    errors = [f for f in diagnosis.findings if f.issue == "label-error"]
    found = {str(edited.parent / path) for path in planted} & {f.path for f in errors}
    assert len(found) >= 3, [(f.path, f.details) for f in errors]
    for finding in (f for f in errors if f.path in found):  # the label added is named
        added = set(finding.label.split("; ")) - set(finding.suggested.split("; "))
        assert any(f"{label} given (p=" in finding.details for label in added), finding
    assert diagnosis.per_class["xray"] >= 2 and diagnosis.cross_validated_accuracy > 0.8
    from headstart.doctor.page import doctor_page

    assert "of its label decisions right out of sample" in doctor_page(diagnosis)


def test_an_mlp_head_trains_on_label_sets_with_binary_cross_entropy(mosaics, cache_dir, tmp_path):
    classifier = train(
        mosaics.listing,
        tmp_path / "mlp",
        settings=FitSettings(strategy="mlp", seed=0, epochs=60),
        context=RunContext(cache_dir=cache_dir),
    )
    assert classifier.head_config.kind == "mlp" and classifier.multi_label
    from headstart.evaluation.score import evaluate

    assert evaluate(classifier, mosaics.listing).mAP > 0.85


@pytest.mark.slow  # a backbone's top tuned for an epoch
def test_fine_tuning_trains_on_label_sets(mosaics, cache_dir, tmp_path):
    classifier = train(
        mosaics.listing,
        tmp_path / "tuned",
        settings=FitSettings(strategy="finetune", finetune_epochs=1, seed=0, unfreeze="1"),
        context=RunContext(cache_dir=cache_dir),
    )
    assert classifier.multi_label and classifier.training.strategy == "finetune"
    assert len(classifier.history) == 1 and 0 < classifier.history[0]["val_accuracy"] <= 1
    from headstart.evaluation.score import evaluate

    assert evaluate(classifier, mosaics.listing).mAP > 0.8


@pytest.mark.slow  # a local Ray cluster's start
def test_training_on_ray_gives_the_local_multi_label_model(mosaics, cache_dir, tmp_path):
    from safetensors.numpy import load_file

    args = [str(mosaics.listing), "--multi-label", "--strategy", "linear", "--json"]
    local = headstart("train", *args, "-o", str(tmp_path / "local"), cache_dir=cache_dir)
    on_ray = ["--ray", "local", "--feature-store", str(tmp_path / "store")]
    remote = headstart("train", *args, "-o", str(tmp_path / "ray"), *on_ray, cache_dir=cache_dir)
    assert local.returncode == 0 and remote.returncode == 0, local.stderr + remote.stderr
    assert json.loads(remote.stdout)["val_map"] == json.loads(local.stdout)["val_map"]
    models = [Classifier.load(tmp_path / name) for name in ("local", "ray")]
    assert models[0].multi_label and models[0].thresholds == models[1].thresholds
    weights = [
        load_file(next((tmp_path / m).glob("model-*.safetensors"))) for m in ("local", "ray")
    ]
    for name in weights[0]:
        assert np.array_equal(weights[0][name], weights[1][name]), name


@pytest.mark.slow  # a browser's start and a page load
@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"),
    reason="Debian's chromium and chromium-driver are not installed",
)
def test_the_served_page_shows_each_photos_label_set(model, mosaics, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from headstart.export.onnx import export_classifier
    from headstart.export.runtime import OnnxClassifier
    from headstart.serving.app import create_app

    classifier, _ = model
    runtime = OnnxClassifier(export_classifier(classifier, tmp_path / "page.onnx"))
    photos = sorted((mosaics.listing.parent / "images" / "test").iterdir())[2:5]
    with running(lambda port: create_app(runtime)) as url:
        browser.get(url)
        wait = WebDriverWait(browser, 60)
        wait.until(lambda d: "any number a photo" in d.find_element(By.ID, "labels").text)
        browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in photos))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".result .set")) == 3)
        shown = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".result .set")]
        screenshot = tmp_path / "multi-label-page.png"
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    expected = [p.label_set for p in runtime.predict(photos)]
    assert shown == [" · ".join(labels) or "none of the labels" for labels in expected]


def test_hostile_label_listings_are_read_or_refused_in_one_line(tmp_path):
    """2,000 listings built from the pieces that break readers: every one is a dataset whose
    labels are its classes, or one HeadstartError line; never another exception."""
    import random

    from headstart.data.sources import labels_of

    d, s = names("daisy"), names("sunflower")
    listing(tmp_path, ["path,label", f"{d[0]},daisy"])  # the photos, beside the listings
    rng = random.Random(0)
    good, bad = [*d, *s], ["missing.jpg", "", "../x.jpg", "/etc/passwd", "a\x00b.jpg", '"q"']
    columns = {  # what each kind of column usually holds
        "labels": ["daisy", "sunflower", "daisy;sunflower", "daisy sunflower", ""],
        "split": ["train", "val", "test", ""],
        "flag": ["0", "1"],
    }
    rare = [" ", ";", "2", "-1", "split", "path", "labels", "\x07", "\u202e", "é", "x" * 300,
            '"', "a;a", "1.0"]  # fmt: skip
    headers = [[], ["path", "label"], ["path", "labels", "split"], ["file", "tags"],
               ["path", "daisy", "sunflower"], ["path", "daisy", "daisy"],
               ["image", "a", "b", "split"], ["path", "", "b"], ["id", "split", "a"]]  # fmt: skip

    def cell(pieces: list[str], odd: list[str]) -> str:
        return rng.choice(odd if rng.random() < 0.03 else pieces)

    def kind(name: str, position: int) -> str:
        if name == "split" or (not name and position == 2):
            return "split"
        return "labels" if name in ("", "label", "labels", "tags") else "flag"

    outcomes = {"read": 0, "refused": 0}
    for number in range(2000):
        header = rng.choice(headers)
        named = header or ["path", "", ""][: rng.choice([2, 3])]
        kinds = [kind(name, i) for i, name in enumerate(named)][1:]
        width = len(kinds) + (rng.random() < 0.05) - (rng.random() < 0.05)
        rows = [[cell(good, bad)] + [cell(columns[k], rare) for k in kinds[:width]]
                for _ in range(rng.randint(2, 12))]  # fmt: skip
        path = tmp_path / f"{number}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([header, *rows] if header else rows)
        try:
            dataset = load_dataset(path, multi_label=rng.random() < 0.3)
        except HeadstartError as error:
            assert "\n" not in str(error)
            outcomes["refused"] += 1
            continue
        outcomes["read"] += 1
        given = {label for sample in dataset.samples for label in labels_of(sample)}
        assert given == set(dataset.classes) and dataset.classes
        assert dataset.multi_label or all(sample.labels is None for sample in dataset.samples)
    assert outcomes["read"] > 20 and outcomes["refused"] > 100, outcomes


def test_a_report_of_many_labels_shows_galleries_of_the_weakest(
    model, mosaics, tmp_path, monkeypatch
):
    from headstart.evaluation import multilabel_report
    from headstart.evaluation.report import write_report

    classifier, _ = model
    monkeypatch.setattr(multilabel_report, "GALLERY_LABELS", 1)
    page = write_report(classifier, mosaics.listing, tmp_path / "report", heat_maps=False)
    html = page.read_text()
    weakest = min(json.loads((tmp_path / "report" / "metrics.json").read_text())["per_label"],
                  key=lambda row: row["average_precision"])  # fmt: skip
    assert html.count("<h3>") == 1 and f"<h3>{weakest['label']}</h3>" in html
    assert "For the 1 labels of 3 with the lowest average precision" in html


@pytest.mark.slow  # a TFLite conversion: about 20 s
def test_tflite_export_gives_the_onnx_files_scores_and_thresholds(model, mosaics, tmp_path):
    from headstart.export.onnx import export_classifier
    from headstart.export.runtime import OnnxClassifier
    from headstart.export.tflite import TfliteClassifier, export_tflite

    classifier, _ = model
    lite = TfliteClassifier(export_tflite(classifier, tmp_path / "multi.tflite"))
    onnx_file = OnnxClassifier(export_classifier(classifier, tmp_path / "onnx" / "multi.onnx"))
    assert lite.thresholds == pytest.approx(classifier.thresholds)
    photos = sorted((mosaics.listing.parent / "images" / "test").iterdir())
    pixels = np.stack([classifier.preprocessing.pixels(p.read_bytes()) for p in photos])
    outputs = lite.outputs(pixels)
    assert set(outputs) == {"scores", "unknown_score"}
    assert np.abs(outputs["scores"] - onnx_file.probabilities(pixels)).max() < 1e-4


@pytest.mark.slow  # a browser and onnxruntime-web's wasm
@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"),
    reason="Debian's chromium and chromium-driver are not installed",
)
def test_the_exported_web_page_gives_each_photo_its_label_set(model, mosaics, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from test_web_page import static_host

    from headstart.export import web_page
    from headstart.export.runtime import OnnxClassifier

    vendored = (web_page.runtime_folder() / web_page.RUNTIME_FILES[-1]).is_file()
    if not vendored and not os.environ.get("CI"):
        pytest.skip("onnxruntime-web is not vendored: scripts/vendor_web.sh needs npm")
    classifier, _ = model
    folder = web_page.export_web_page(classifier, tmp_path / "page")[0].parent
    assert json.loads((folder / "model.json").read_text())["thresholds"] == pytest.approx(
        classifier.thresholds
    )
    photos = sorted((mosaics.listing.parent / "images" / "test").iterdir())
    with static_host(folder) as url:
        browser.get(url)
        wait = WebDriverWait(browser, 120)
        wait.until(lambda d: d.find_element(By.ID, "status").get_attribute("data-ready"))
        assert "any number a photo" in browser.find_element(By.ID, "status").text
        browser.find_element(By.ID, "files").send_keys("\n".join(str(p) for p in photos))
        wait.until(lambda d: d.find_element(By.ID, "results").get_attribute("data-done"))
        rows = browser.find_elements(By.CSS_SELECTOR, "#results .bars")
        shown = [json.loads(row.get_attribute("data-labels")) for row in rows]
        screenshot = tmp_path / "web-page-multi-label.png"
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
    thresholds = dict(zip(LABELS, classifier.thresholds, strict=True))
    python = OnnxClassifier(folder / "model.onnx").predict(photos)
    assert len(shown) == len(python) == len(photos)
    for labels, expected in zip(shown, python, strict=True):
        near = any(abs(expected.scores[k] - t) < 0.01 for k, t in thresholds.items())
        assert labels == expected.label_set or near, (labels, expected.scores)
