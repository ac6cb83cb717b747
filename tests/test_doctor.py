"""`headstart doctor` on real photos with known problems planted in them."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_photos, headstart, real_photos, usage_check
from PIL import Image

from headstart.context import RunContext
from headstart.doctor.labels import likely_label_errors, out_of_sample_probabilities
from headstart.errors import HeadstartError


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Real daisy and sunflower photos, with one planted example of each problem: {name: path}."""
    root = tmp_path_factory.mktemp("messy")
    for label in ("daisy", "sunflower"):
        copy_photos(real_photos(label, 25), root / "train" / label)
        copy_photos(real_photos(label, 10, skip=25), root / "val" / label)
    daisy = sorted((root / "train/daisy").iterdir())
    sunflower = sorted((root / "train/sunflower").iterdir())
    planted = {
        "conflict": shutil.copy(daisy[0], root / "train/sunflower/conflict.jpg"),
        "leak": shutil.copy(sunflower[1], root / "val/sunflower/leak.jpg"),
        "near": root / "train/daisy/near.jpg",
        "blank": root / "train/daisy/blank.png",
        "tiny": root / "train/sunflower/tiny.jpg",
        "strip": root / "train/sunflower/strip.jpg",
        "grayscale": root / "train/daisy/grayscale.jpg",
        "broken": root / "train/sunflower/broken.jpg",
        "mislabelled": root / "train/daisy/mislabelled.jpg",
    }
    photo = Image.open(daisy[2]).convert("RGB")
    photo.resize((photo.width * 3 // 5, photo.height * 3 // 5)).save(planted["near"], quality=70)
    Image.new("RGB", (300, 300), (128, 128, 128)).save(planted["blank"])
    Image.open(sunflower[3]).convert("RGB").resize((40, 30)).save(planted["tiny"])
    Image.open(sunflower[4]).convert("RGB").resize((1000, 150)).save(planted["strip"])
    Image.open(daisy[5]).convert("L").save(planted["grayscale"])
    planted["broken"].write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    shutil.move(sunflower[11], planted["mislabelled"])  # a typical sunflower
    return root, {name: os.path.abspath(path) for name, path in planted.items()}


@pytest.fixture(scope="module")
def diagnosed(messy, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    root, planted = messy
    output = tmp_path_factory.mktemp("doctor")
    result = headstart("doctor", str(root), "-o", str(output), "--json", cache_dir=cache_dir)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), output, planted


def flagged(report: dict, issue: str) -> set[str]:
    return {f["path"] for f in report["findings"] if f["issue"] == issue}


@pytest.mark.slow  # the doctor's whole run on 72 photos: about 10 s
def test_duplicates_and_leaks_are_found_with_their_case(diagnosed):
    report, _, planted = diagnosed
    assert planted["conflict"] in flagged(report, "exact-conflict")
    assert flagged(report, "exact-leak") == {planted["leak"]}  # the copy outside training
    assert planted["near"] in flagged(report, "near-duplicate")
    near = [g for g in report["groups"] if planted["near"] in {m["path"] for m in g["members"]}]
    assert len(near) == 1 and len(near[0]["members"]) == 2


@pytest.mark.slow  # the doctor's whole run on 72 photos: about 10 s
def test_a_moved_photo_is_suspected_with_the_right_label(diagnosed):
    report, _, planted = diagnosed
    suspect = [f for f in report["findings"] if f["path"] == planted["mislabelled"]]
    assert [(f["issue"], f["label"], f["suggested"]) for f in suspect] == [
        ("label-error", "daisy", "sunflower")
    ]
    assert report["cross_validated_accuracy"] > 0.8


@pytest.mark.slow  # the doctor's whole run on 72 photos: about 10 s
def test_image_health_and_unreadable_files(diagnosed):
    report, _, planted = diagnosed
    for issue in ("blank", "tiny", "grayscale", "unreadable"):
        assert planted[issue if issue != "unreadable" else "broken"] in flagged(report, issue)
    assert planted["strip"] in flagged(report, "extreme-aspect")
    # Untouched photos raise no health alarm of these kinds, but for the two nearly colourless
    # photos that the set really holds (one black-and-white, one a white daisy on white).
    for issue in ("blank", "tiny", "extreme-aspect"):
        assert len(flagged(report, issue)) == 1, issue
    real = {Path(p).name for p in flagged(report, "grayscale") if p != planted["grayscale"]}
    assert real == {"10437770546_8bb6f7bdd3_m.jpg", "11642632_1e7627a2cc.jpg"}


@pytest.mark.slow  # the doctor's whole run on 72 photos: about 10 s
def test_issues_csv_and_a_self_contained_page(diagnosed):
    report, output, _ = diagnosed
    with open(output / "issues.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[0].keys() >= {"path", "issue", "score", "details"}
    assert len(rows) == len(report["findings"])
    page = (output / "doctor.html").read_text(encoding="utf-8")
    assert "data:image/jpeg;base64," in page
    assert "http://" not in page and "https://" not in page
    assert "conflict.jpg" in page


@pytest.mark.slow  # the doctor's whole run on 72 photos: about 10 s
def test_a_second_look_reads_features_and_measurements_from_the_cache(
    messy, diagnosed, cache_dir, monkeypatch
):
    from headstart import diagnose
    from headstart.doctor import health

    def no_decoding(data: bytes):
        raise AssertionError("measured again")

    monkeypatch.setattr(health, "measure", no_decoding)
    again = diagnose(messy[0], context=RunContext(cache_dir=cache_dir))
    assert again.computed == 0
    assert again.to_dict()["findings"] == diagnosed[0]["findings"]


@pytest.mark.slow  # the doctor's whole run on 72 photos: about 10 s
def test_train_leaves_out_what_issues_csv_lists(messy, diagnosed, cache_dir):
    from headstart import train

    root, _ = messy
    output = diagnosed[1]
    with open(output / "issues.csv", encoding="utf-8") as handle:
        listed = {row["path"] for row in csv.DictReader(handle)} - {""}
    classifier = train(root, context=RunContext(cache_dir=cache_dir), exclude=output / "issues.csv")
    summary = classifier.summary
    readable = len(list(root.rglob("*.*"))) - 1  # less the broken file, listed as unreadable
    assert sum(summary.used.values()) == readable - (len(listed) - 1)
    assert f"{len(listed)} images left out" in summary.notes[0]


def test_a_plain_list_of_paths_with_comments_and_relative_paths(messy, cache_dir, tmp_path):
    from headstart.data.exclude import read_exclusions

    root, planted = messy
    listing = root / "exclude.txt"
    listing.write_text("# flagged by hand\ntrain/daisy/near.jpg\n\n" + planted["leak"] + "\n")
    assert read_exclusions(listing) == {Path(planted["near"]), Path(planted["leak"])}


def test_exclusions_keep_names_with_unicode_line_breaks_and_quoted_newlines(tmp_path, capsys):
    """Before: a name holding U+2028 was split in two, a quoted newline in issues.csv was
    lost (the flagged image stayed in training), and ~nosuchuser/x.jpg was a traceback."""
    from headstart.data.exclude import read_exclusions

    odd = ["a\u2028b.jpg", "line\nbreak.jpg", "tab\x1cfile.jpg"]
    issues = tmp_path / "issues.csv"
    with issues.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["path", "issue"])
        writer.writerows([name, "label-error"] for name in odd)
    assert read_exclusions(issues) == {(tmp_path / name).resolve() for name in odd}
    plain = tmp_path / "list.txt"
    plain.write_text("a\u2028b.jpg\r\ntab\x1cfile.jpg\n", encoding="utf-8")
    assert read_exclusions(plain) == {(tmp_path / n).resolve() for n in (odd[0], odd[2])}
    plain.write_text("~nosuchuser-headstart/x.jpg\n", encoding="utf-8")
    with pytest.raises(HeadstartError, match="cannot use the path '~nosuchuser-headstart"):
        read_exclusions(plain)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("folder", "a folder; give issues.csv"),
        (b"path\ntrain/daisy/\xff.jpg\n", "line 2: not UTF-8"),
    ],
)
def test_a_bad_exclusion_list_is_one_line(messy, tmp_path, cache_dir, content, message, capsys):
    listing = tmp_path / "list.csv"
    if content == "folder":
        listing.mkdir()
    elif content is not None:
        listing.write_bytes(content)
    command = ["train", str(messy[0]), "-o", str(tmp_path / "m"), "--exclude", str(listing)]
    result = usage_check(*command, "--cache-dir", str(cache_dir), capsys=capsys)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_confident_learning_finds_flipped_labels_in_separable_data():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (3, 32)) * 3
    y = np.repeat(np.arange(3), 100)
    x = (centres[y] + rng.normal(0, 1, (300, 32))).astype(np.float32)
    flipped = rng.choice(300, 15, replace=False)
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + 1) % 3
    found = likely_label_errors(noisy, out_of_sample_probabilities(x, noisy, 3))
    hits = len(set(found) & set(flipped.tolist()))
    assert hits >= 12 and hits / len(found) >= 0.9


def test_measurements_are_kept_only_under_the_digest_of_the_bytes_measured(tmp_path):
    from headstart.doctor.health import FINGERPRINT, measurements
    from headstart.features.cache import FeatureCache
    from headstart.features.extract import content_digest

    photo = real_photos("daisy", 1)[0]
    cache = FeatureCache(tmp_path / "cache")
    edited = b"\0" * 20  # the digest of content the file no longer holds
    assert np.isnan(measurements([photo], [edited], cache)).all()
    assert cache.count(FINGERPRINT) == 0
    kept = measurements([photo], [content_digest(photo.read_bytes())], cache)
    assert not np.isnan(kept).any() and cache.count(FINGERPRINT) == 1


def test_neighbours_in_small_chunks_match_the_whole_matrix(monkeypatch):
    from headstart.doctor import neighbours

    rng = np.random.default_rng(0)
    rows = neighbours.unit_rows(rng.normal(size=(300, 16)).astype(np.float32), np.zeros(16))
    similarity = rows @ rows.T
    np.fill_diagonal(similarity, -np.inf)
    monkeypatch.setattr(neighbours, "_WORKING_MEMORY_MIB", 0.005)  # two query rows at a time
    distances, indices = neighbours.nearest(rows, rows, 3, leave_out_self=True)
    np.testing.assert_array_equal(indices, np.argsort(-similarity, axis=1)[:, :3])
    np.testing.assert_allclose(distances[:, 0], 1 - similarity.max(axis=1), atol=1e-6)


def test_thousands_of_copies_make_a_small_page_and_every_copy_is_listed(cache_dir, tmp_path):
    """Before: 4,000 copies of 2 photos made a 24.5 MB page of 4,000 thumbnails, and the copies
    inside training were not listed to act on."""
    from headstart import diagnose
    from headstart.doctor.page import doctor_page

    data = tmp_path / "copies"
    daisy, sunflower = real_photos("daisy", 1, skip=20)[0], real_photos("sunflower", 1, skip=20)[0]
    for n in range(400):
        for label, photo in (("daisy", daisy), ("sunflower", sunflower)):
            (data / label).mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, data / label / f"{n:04d}.jpg")
    diagnosis = diagnose(data, context=RunContext(cache_dir=cache_dir))
    leaks = [f for f in diagnosis.findings if f.issue == "exact-leak"]
    assert len(leaks) == 2 * 399  # every copy but the one kept in training
    assert sum(f.split == "train" for f in leaks) > 100
    page = doctor_page(diagnosis)
    assert page.count("<img") == 2 and len(page) < 100_000
    assert "400 copies: daisy · train" in page
