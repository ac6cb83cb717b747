"""The command line end to end, as a user runs it, on real photos plus generated bad files."""

import csv
import io
import json
import shutil

import numpy as np
import pytest
from conftest import headstart, jpeg_bytes, real_photos, usage_check
from PIL import Image


@pytest.fixture(scope="module")
def messy(presplit, tmp_path_factory):
    """The real-photo set plus the files users really have: broken, odd modes, rotated."""
    root = tmp_path_factory.mktemp("messy")
    shutil.copytree(presplit, root, dirs_exist_ok=True)
    daisy, sunflower = root / "train" / "daisy", root / "train" / "sunflower"
    photo = Image.open(real_photos("daisy", 1, skip=20)[0]).convert("RGB")
    (daisy / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x17" * 300)
    (daisy / "notes.jpg").write_text("a text file named .jpg")
    png = io.BytesIO()
    photo.save(png, "PNG")
    (sunflower / "truncated.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 3])
    (daisy / "cmyk.jpg").write_bytes(jpeg_bytes(photo.convert("CMYK")))
    sixteen = (np.asarray(photo.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(sixteen).save(daisy / "sixteen_bit.png")
    exif = Image.Exif()
    exif[0x0112] = 8
    (daisy / "rotated.jpg").write_bytes(jpeg_bytes(photo, exif=exif.tobytes()))
    (daisy / "readme.txt").write_text("ignored: not an image suffix")
    return root


@pytest.mark.slow  # four whole commands
def test_train_evaluate_predict_info(messy, cache_dir, tmp_path):
    model = tmp_path / "model"
    trained = headstart("train", str(messy), "-o", str(model), "--json", cache_dir=cache_dir)
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    assert summary["used"] == {
        "train": 27,
        "val": 16,
        "test": 0,
    }  # 24 photos + CMYK, 16-bit, rotated
    skipped = sorted(path.rsplit("/", 1)[1] for path, _ in summary["skipped"])
    assert skipped == ["corrupt.jpg", "notes.jpg", "truncated.png"]

    table = headstart("train", str(messy), "-o", str(model), cache_dir=cache_dir)
    assert table.returncode == 0
    assert "Training summary" in table.stdout and "truncated.png" in table.stdout
    again = headstart("train", str(messy), "-o", str(model), "--json", cache_dir=cache_dir)
    assert json.loads(again.stdout)["computed"] == 0  # all from the cache the second time

    evaluated = headstart("evaluate", str(model), str(messy), "--json", cache_dir=cache_dir)
    assert evaluated.returncode == 0, evaluated.stderr
    evaluation = json.loads(evaluated.stdout)
    assert evaluation["split"] == "val" and evaluation["images"] == 16
    assert evaluation["accuracy"] >= 0.75
    assert np.array(evaluation["confusion"]).sum() == 16

    photos = [str(p) for p in real_photos("sunflower", 2, skip=20)]
    predicted = headstart(
        "predict", str(model), *photos, "--top-k", "2", "--json", cache_dir=cache_dir
    )
    assert predicted.returncode == 0, predicted.stderr
    predictions = json.loads(predicted.stdout)
    assert [p["path"] for p in predictions] == photos
    assert all(len(p["top"]) == 2 for p in predictions)
    from headstart import Classifier, RunContext

    expected = Classifier.load(model, RunContext(cache_dir=cache_dir)).predict(photos, top_k=2)
    for ours, theirs in zip(predictions, expected, strict=True):
        assert [t["label"] for t in ours["top"]] == theirs.labels
        assert [t["probability"] for t in ours["top"]] == pytest.approx(theirs.probabilities)

    as_csv = headstart(
        "predict",
        str(model),
        str(messy / "train" / "sunflower"),
        "--csv",
        "-k",
        "1",
        cache_dir=cache_dir,
    )
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert as_csv.returncode == 0 and len(rows) == 13
    assert [r["path"].endswith("truncated.png") for r in rows if r["error"]] == [True]

    info = headstart("info", str(model), "--json")
    assert json.loads(info.stdout)["labels"] == ["daisy", "sunflower"]


def test_errors_are_one_line_with_exit_code_1(tmp_path, cache_dir):
    missing = headstart(
        "train", str(tmp_path / "nowhere"), "-o", str(tmp_path / "m"), cache_dir=cache_dir
    )
    assert missing.returncode == 1
    assert "nowhere: no such file or folder" in missing.stderr and "Traceback" not in missing.stderr
    not_a_model = headstart("predict", str(tmp_path), str(tmp_path), cache_dir=cache_dir)
    assert not_a_model.returncode == 1 and "not a headstart model folder" in not_a_model.stderr


def test_usage_errors_exit_with_code_2():
    result = headstart("train", "--no-such-option")
    assert result.returncode == 2


@pytest.mark.slow
def test_preset_best_trains_exports_and_predicts_alike(presplit, cache_dir, tmp_path):
    """Three backbones side by side: one model folder, one ONNX file, the same answers."""
    from headstart import Classifier, RunContext
    from headstart.export.runtime import OnnxClassifier

    model, onnx_file = tmp_path / "best", tmp_path / "best.onnx"
    trained = headstart(
        "train", str(presplit), "-o", str(model), "--preset", "best", "-q", cache_dir=cache_dir
    )
    assert trained.returncode == 0, trained.stderr
    record = json.loads((model / "headstart.json").read_text())
    assert record["backbone"]["name"] == "efficientnet_lite0+efficientnet_lite1+efficientnet_lite2"
    assert record["head"]["in_features"] == 1984 + 1984 + 2048  # Lite2's stages are wider
    exported = headstart("export", str(model), "-o", str(onnx_file), cache_dir=cache_dir)
    assert exported.returncode == 0, exported.stderr
    photos = real_photos("sunflower", 3, skip=20)
    ours = Classifier.load(model, RunContext(cache_dir=cache_dir)).predict(photos, top_k=2)
    theirs = OnnxClassifier(onnx_file).predict(photos, top_k=2)
    for mine, other in zip(ours, theirs, strict=True):
        assert mine.labels == other.labels
        assert np.allclose(mine.probabilities, other.probabilities, atol=2e-3)
        assert abs(mine.unknown_score - other.unknown_score) < 0.05


def test_version_is_the_package_version(capsys):
    import headstart

    result = usage_check("--version", capsys=capsys)
    assert (result.returncode, result.stdout) == (0, f"headstart {headstart.__version__}\n")
    assert usage_check("train", "--version", capsys=capsys).returncode == 2  # not a train option


def test_json_output_has_null_for_what_is_not_a_number():
    """Before: --json printed bare NaN, which is not JSON."""
    from headstart.cli import _json

    printed = _json({"val_loss": float("nan"), "rows": [1.5, float("inf")], "name": "x"})
    assert json.loads(printed) == {"val_loss": None, "rows": [1.5, None], "name": "x"}
