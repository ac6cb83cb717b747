"""Batch prediction to a Parquet or CSV file, in parts, resumed after a stop."""

from __future__ import annotations

import csv
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import copy_photos, headstart, real_photos

from headstart.errors import HeadstartError
from headstart.model.batch import predict_to_file


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch")
    files = copy_photos(
        real_photos("daisy", 6, skip=20) + real_photos("sunflower", 6, skip=20), folder
    )
    (folder / "broken.jpg").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return sorted([*files, folder / "broken.jpg"])


def test_parquet_holds_what_predict_returns(trained, images, tmp_path):
    classifier, _ = trained
    expected = [p.record() for p in classifier.predict_files(images, 2)]
    done = predict_to_file(classifier, images, tmp_path / "p.parquet", 2, part_size=5)
    assert (done.images, done.unreadable, done.parts, done.parts_reused) == (13, 1, 3, 0)
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.schema.field("probabilities").type == pa.list_(pa.float32())
    rows = table.to_pylist()
    assert [r["path"] for r in rows] == [r["path"] for r in expected]
    assert [r["label"] for r in rows] == [r["label"] for r in expected]
    assert [r["error"] is not None for r in rows] == [
        r["path"].endswith("broken.jpg") for r in rows
    ]
    assert not (tmp_path / "p.parquet.parts").exists()  # parts removed once joined


def stop_on_part(number: int, classifier, monkeypatch) -> None:
    """Ctrl-C as the `number`-th part of a batch prediction starts."""
    real, calls = classifier.predict_files, []

    def predict_files(*args, **kwargs):
        calls.append(1)
        if len(calls) == number:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(classifier, "predict_files", predict_files)


def test_a_stopped_run_goes_on_from_its_last_part(trained, images, tmp_path, monkeypatch):
    classifier, _ = trained
    whole = predict_to_file(classifier, images, tmp_path / "whole.csv", 3, part_size=4)
    stop_on_part(3, classifier, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        predict_to_file(classifier, images, tmp_path / "p.csv", 3, part_size=4)
    assert not (tmp_path / "p.csv").exists()
    assert len(list((tmp_path / "p.csv.parts").glob("part-*.json"))) == 2
    monkeypatch.undo()
    resumed = predict_to_file(classifier, images, tmp_path / "p.csv", 3, part_size=4)
    assert (resumed.parts, resumed.parts_reused) == (4, 2)
    assert (tmp_path / "p.csv").read_text() == (tmp_path / "whole.csv").read_text()
    header = next(csv.reader((tmp_path / "p.csv").open()))
    assert header[:3] == ["path", "error", "label"] and header[-1] == "probability_2"
    assert whole.unreadable == 1


def test_parts_of_another_run_are_never_mixed_in(trained, images, tmp_path, monkeypatch):
    classifier, _ = trained
    stop_on_part(1, classifier, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        predict_to_file(classifier, images, tmp_path / "p.parquet", 2)
    monkeypatch.undo()
    with pytest.raises(HeadstartError, match="parts of another run"):
        predict_to_file(classifier, images, tmp_path / "p.parquet", 3)  # another top-k


def test_an_edited_part_is_named_not_trusted(trained, images, tmp_path, monkeypatch):
    classifier, _ = trained
    stop_on_part(2, classifier, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        predict_to_file(classifier, images, tmp_path / "p.csv", part_size=5)
    monkeypatch.undo()
    part = tmp_path / "p.csv.parts" / "part-000000.json"
    part.write_text('[{"path": "x"}]')
    with pytest.raises(HeadstartError, match=r"part-000000\.json: not a predictions part"):
        predict_to_file(classifier, images, tmp_path / "p.csv", part_size=5)


def test_a_manifest_lists_the_images(trained, images, tmp_path):
    classifier, _ = trained
    manifest = tmp_path / "list.parquet"
    names = [str(p) for p in images[:3]] + ["not/there.jpg"]
    pq.write_table(pa.table({"path": names, "label": ["x"] * 4}), manifest)
    predict_to_file(classifier, manifest, tmp_path / "p.parquet", 1)
    rows = pq.read_table(tmp_path / "p.parquet").to_pylist()
    assert [r["path"] for r in rows][:3] == names[:3]
    assert rows[3]["path"] == str(tmp_path / "not/there.jpg")  # relative to the manifest
    assert "No such file" in rows[3]["error"]


def test_a_manifest_path_no_file_can_have_is_a_row_with_its_reason(trained, images, tmp_path):
    classifier, _ = trained
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path\n{images[0]}\nnul\0byte.jpg\n", encoding="utf-8")
    predict_to_file(classifier, manifest, tmp_path / "p.csv")
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert rows[0]["label"] and rows[1]["error"] == "unreadable: not a valid file name"


@pytest.mark.parametrize(
    ("content", "message"),
    [("file\na.jpg\n", "needs a `path` column"), ("path\n", "lists no images")],
)
def test_a_bad_manifest_is_named(trained, tmp_path, content, message):
    classifier, _ = trained
    manifest = tmp_path / "list.csv"
    manifest.write_text(content)
    with pytest.raises(HeadstartError, match=message):
        predict_to_file(classifier, manifest, tmp_path / "p.csv")


def test_predict_command_writes_a_file(trained, images, cache_dir, tmp_path):
    _, model = trained
    output = tmp_path / "out.csv"
    result = headstart(
        "predict", str(model), str(images[0].parent), "-o", str(output), "-q", cache_dir=cache_dir
    )
    assert result.returncode == 0, result.stderr
    assert "wrote 13 predictions" in result.stderr and "1 unreadable" in result.stderr
    assert len(output.read_text().splitlines()) == 14
    wrong = headstart("predict", str(model), str(images[0]), "-o", str(tmp_path / "out.txt"))
    assert wrong.returncode == 1 and ".parquet or .csv" in wrong.stderr
    mixed = headstart("predict", str(model), str(images[0]), "-o", str(output), "--json")
    assert mixed.returncode == 2 and "--output" in mixed.stderr


def test_a_file_name_that_is_not_utf8_is_written_not_a_traceback(trained, tmp_path):
    classifier, _ = trained
    photo = copy_photos(real_photos("daisy", 1, skip=20), tmp_path / "photos")[0]
    os.rename(os.fsencode(photo), os.fsencode(photo.parent) + b"/caf\xe9.jpg")  # Latin-1 name
    predict_to_file(classifier, tmp_path / "photos", tmp_path / "p.parquet")
    [row] = pq.read_table(tmp_path / "p.parquet").to_pylist()
    assert row["path"].endswith("caf\\xe9.jpg") and row["label"] == "daisy"
    predict_to_file(classifier, tmp_path / "photos", tmp_path / "p.csv")
    assert b"caf\xe9.jpg,," in (tmp_path / "p.csv").read_bytes()  # its own bytes, as --csv


def test_parquet_without_pyarrow_fails_before_any_prediction(
    trained, images, tmp_path, monkeypatch
):
    """Before: the run predicted every image, then failed at writing."""
    classifier, _ = trained
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # an install without it
    monkeypatch.setattr(classifier, "predict_files", lambda *a, **k: pytest.fail("predicted"))
    with pytest.raises(HeadstartError, match="Parquet files need pyarrow"):
        predict_to_file(classifier, images, tmp_path / "p.parquet")
    assert not (tmp_path / "p.parquet.parts").exists()


def test_a_parts_folder_that_cannot_be_removed_is_named(trained, images, tmp_path, monkeypatch):
    """Before: the predictions were written, then the run exited 1 naming no folder."""
    classifier, _ = trained

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("headstart.model.batch.shutil.rmtree", refuse)
    monkeypatch.setattr("headstart.model.batch.warn", lambda message: warned.append(message))
    warned: list[str] = []
    done = predict_to_file(classifier, images, tmp_path / "p.csv")
    assert done.images == len(images) and (tmp_path / "p.csv").stat().st_size > 0
    assert warned == [f"{tmp_path / 'p.csv.parts'}: could not remove the parts folder "
                      "(Permission denied)"]  # fmt: skip


def stopped_run(classifier, images, output, monkeypatch, part_size=5):
    """A run stopped as its third part starts: two parts written."""
    stop_on_part(3, classifier, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        predict_to_file(classifier, images, output, part_size=part_size)
    monkeypatch.undo()
    return output.with_name(output.name + ".parts")


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (lambda part: {**part, "records": part["records"][:1]}, "one prediction for each of its 5"),
        (lambda part: {**part, "records": part["records"][::-1]}, "for another image"),
        (
            lambda part: {**part, "records": [{**r, "labels": 7} for r in part["records"]]},
            "wrong type",
        ),
        (
            lambda part: {
                **part,
                "records": [{**r, "probabilities": [float("nan")]} for r in part["records"]],
            },
            "wrong type",
        ),
        (lambda part: part["records"], "written by another run"),
    ],
    ids=["cut-short", "reordered", "labels-retyped", "nan-probabilities", "no-run"],
)
def test_a_cut_or_retyped_part_is_named_before_any_work(
    trained, images, tmp_path, monkeypatch, damage, named
):
    """Before: a part cut to 1 record gave 'wrote 39 predictions' and rc 0; wrong types gave
    pyarrow tracebacks."""
    import json

    classifier, _ = trained
    parts = stopped_run(classifier, images, tmp_path / "p.parquet", monkeypatch)
    part = parts / "part-000001.json"
    part.write_text(json.dumps(damage(json.loads(part.read_text()))))
    predicted = []
    monkeypatch.setattr(
        classifier, "predict_files", lambda *a, **k: predicted.append(a) or [], raising=True
    )
    refusal = rf"part-000001\.json: not a predictions part.*{named}"
    with pytest.raises(HeadstartError, match=refusal):
        predict_to_file(classifier, images, tmp_path / "p.parquet", part_size=5)
    assert predicted == [] and not (tmp_path / "p.parquet").exists()


def test_parts_without_their_run_record_are_not_reused(trained, images, tmp_path, monkeypatch):
    """Before: a parts folder without run.json had another run's parts reused as they were."""
    classifier, _ = trained
    parts = stopped_run(classifier, images, tmp_path / "p.csv", monkeypatch)
    (parts / "run.json").unlink()
    with pytest.raises(HeadstartError, match="written by another run"):
        predict_to_file(classifier, images, tmp_path / "p.csv", 2, part_size=5)  # other top-k
