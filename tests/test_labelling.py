"""Which photos to label next, and the labelling session behind the page, on real photos."""

import csv
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import XRAYS, copy_photos, headstart, real_photos
from PIL import Image

from headstart import HeadstartError, RunContext
from headstart.data.locations import image_location
from headstart.labelling.session import REFIT_EVERY, Session, check_pool_and_dataset
from headstart.labelling.strategies import at_random, embedded, margin, typical
from headstart.labelling.suggest import default_extractor, suggest

DAISIES, SUNFLOWERS = real_photos("daisy", 16, skip=20), real_photos("sunflower", 16, skip=20)


def truth(path) -> str:
    name = str(path).rsplit("/", 1)[-1]
    return "daisy" if any(p.name == name for p in DAISIES) else "sunflower"


@pytest.fixture
def pool(tmp_path):
    return copy_photos(DAISIES + SUNFLOWERS, tmp_path / "pool")


def test_typical_photos_cover_both_kinds_before_any_label(pool, cache_dir):
    found = suggest(pool, 4, context=RunContext(cache_dir=cache_dir, progress=False))
    assert found.strategy == "typical" and [row.rank for row in found.rows] == [1, 2, 3, 4]
    assert len({row.path for row in found.rows}) == 4
    assert {truth(row.path) for row in found.rows} == {"daisy", "sunflower"}
    assert all(row.suggested is None and "typical" in row.reason for row in found.rows)


def test_strategies_on_real_features(pool, cache_dir):
    extractor = default_extractor(pool, RunContext(cache_dir=cache_dir))
    x = extractor.extract_files(pool, False, "pool").features[:, :1280]
    z = embedded(x)
    labelled = np.zeros(len(x), bool)
    labelled[[0, 16]] = True  # one daisy, one sunflower
    picks = typical(z, labelled, 6)
    assert len({p.index for p in picks}) == 6 and not labelled[[p.index for p in picks]].any()
    probabilities = np.tile([0.5, 0.5], (len(x), 1))
    probabilities[5] = [0.51, 0.49]  # the least sure after the ties
    probabilities[:5] = [0.99, 0.01]
    assert [p.index for p in margin(probabilities, ~labelled, 1)] != [5]  # ties come first
    assert len(at_random(~labelled, 5, seed=1)) == 5


def test_copies_labelled_photos_and_unreadable_files_are_left_out(
    pool, presplit, cache_dir, tmp_path
):
    labelled_copy = Path(
        shutil.copy(next((presplit / "train" / "daisy").iterdir()), pool[0].parent)
    )
    near_copy = pool[0].parent / "resized.jpg"
    with Image.open(pool[3]) as image:
        image.resize((image.width * 3 // 4, image.height * 3 // 4)).save(near_copy, quality=90)
    (pool[0].parent / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")
    found = suggest(pool[0].parent, 100, labelled=presplit, context=RunContext(cache_dir=cache_dir))
    suggested = {row.path.name for row in found.rows}
    assert found.strategy == "margin over clusters"  # 40 labelled photos: a head is fitted
    assert [p.name for p, _ in found.skipped] == ["broken.jpg"]
    assert found.already_labelled == 1 and labelled_copy.name not in suggested
    assert found.duplicates >= 1 and not {pool[3].name, "resized.jpg"} <= suggested
    assert all(row.suggested in ("daisy", "sunflower") for row in found.rows)
    margins = [row.score for row in found.rows]
    assert margins == sorted(margins)  # the least sure first


def test_a_model_ranks_the_pool_and_marks_photos_unlike_every_class(trained, pool, tmp_path):
    classifier, _ = trained
    copy_photos(XRAYS[:4], tmp_path / "pool")
    found = suggest(pool[0].parent, 40, model=classifier)
    assert found.strategy == "margin over clusters"
    assert len(found.rows) == 36 - found.duplicates
    flagged = {row.path.name for row in found.rows if row.unknown}
    predicted = classifier.predict([row.path for row in found.rows], top_k=1)
    assert flagged == {p.path.name for p in predicted if p.unknown}  # the model's own flags
    assert [row.suggested for row in found.rows] == [p.labels[0] for p in predicted]
    assert all("unlike every class" in row.reason for row in found.rows if row.unknown)


def test_the_command_writes_the_csv_from_a_listing(trained, pool, cache_dir, tmp_path):
    _, model = trained
    listing = tmp_path / "pool.csv"
    listing.write_text("path\n" + "".join(f"{p}\n" for p in pool[:12]))
    out = tmp_path / "next.csv"
    result = headstart(
        "suggest", str(model), str(listing), "-n", "5", "-o", str(out), cache_dir=cache_dir
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["path", "rank", "suggested", "score", "reason"]
    assert [int(r["rank"]) for r in rows] == [1, 2, 3, 4, 5]
    assert {r["path"] for r in rows} <= {str(p) for p in pool[:12]}
    wrong = headstart("suggest", str(listing), "-o", str(tmp_path / "next.txt"))
    assert wrong.returncode != 0 and "as a .csv file" in wrong.stderr


def test_photos_in_an_object_store_are_suggested(object_store, cache_dir, monkeypatch):
    for name, value in object_store.env.items():
        monkeypatch.setenv(name, value)
    uris = [
        object_store.uri(p.relative_to(object_store.folder).as_posix())
        for p in sorted(object_store.folder.rglob("*.jpg"))[:8]
    ]
    found = suggest(uris, 3, context=RunContext(cache_dir=cache_dir))
    assert len(found.rows) == 3 and all(str(row.path).startswith("s3://") for row in found.rows)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def session(pool, cache_dir, tmp_path):
    extractor = default_extractor(pool, RunContext(cache_dir=cache_dir))
    return Session(pool, tmp_path / "labelled", ["daisy", "sunflower"], extractor)


def test_labels_are_copies_undo_takes_them_back_and_the_head_is_refitted(session, pool):
    before = {p: digest(p) for p in pool}
    written = []
    for _ in range(2 * REFIT_EVERY):
        card = session.cards()[0]
        written.append(session.label(card.photo, truth(session.photo(card.photo))))
    session.wait()
    progress = session.progress()
    assert progress.refits >= 3 and sum(progress.labelled.values()) == 2 * REFIT_EVERY
    # Cross-validated on the photos picked as the hardest: lower than on the rest.
    assert progress.accuracy is not None and progress.accuracy >= 0.5
    assert all(path.parent.name == truth(path) and path.is_file() for path in written)
    shown = session.cards()
    assert all(card.suggested in ("daisy", "sunflower") for card in shown)
    session.skip(shown[0].photo)
    undone = session.undo()
    assert undone is not None and undone.written is None  # the skip
    last = session.undo()
    assert last.written == written[-1] and not written[-1].exists()
    assert session.cards()[0].photo == last.photo  # suggested again, first
    assert {p: digest(p) for p in pool} == before  # the user's photos untouched


def test_a_label_or_photo_outside_the_session_is_refused(session, tmp_path):
    card = session.cards()[0]
    with pytest.raises(HeadstartError, match="not one of"):
        session.label(card.photo, "tulip")
    with pytest.raises(HeadstartError, match="not among the suggestions"):
        session.label(10_000, "daisy")
    with pytest.raises(HeadstartError, match="no photo"):
        session.photo(-1)
    with pytest.raises(HeadstartError, match="give 2 to 9"):
        Session([], tmp_path / "x", ["only"], session.extractor)


def test_the_same_name_twice_gets_a_new_name_not_a_replaced_file(session, tmp_path):
    target = session.dataset / "daisy"
    target.mkdir(parents=True, exist_ok=True)
    card = session.cards()[0]
    name = str(session.photo(card.photo)).rsplit("/", 1)[-1]
    (target / name).write_bytes(b"someone else's")
    written = session.label(card.photo, "daisy")
    assert written.name != name and (target / name).read_bytes() == b"someone else's"


def test_a_dataset_and_a_pool_folder_must_not_hold_each_other(tmp_path):
    (tmp_path / "pool").mkdir()
    with pytest.raises(HeadstartError, match="must not hold each other"):
        check_pool_and_dataset([str(tmp_path / "pool")], tmp_path / "pool" / "labelled")
    with pytest.raises(HeadstartError, match="must not hold each other"):
        check_pool_and_dataset([str(tmp_path / "pool")], tmp_path)
    check_pool_and_dataset([str(tmp_path / "pool")], tmp_path / "labelled")


def test_a_label_that_cannot_name_a_folder_is_refused(session, tmp_path):
    for labels in (["../escape", "ok"], ["a/b", "ok"], [".hidden", "ok"]):
        with pytest.raises(HeadstartError, match="cannot name a class folder"):
            Session([], tmp_path / "x", labels, session.extractor)


def test_the_page_s_api_keeps_serve_s_security(session):
    from fastapi.testclient import TestClient

    from headstart.labelling.page import create_label_app
    from headstart.serving.app import allowed_hosts

    client = TestClient(create_label_app(session, "s3cret", allowed_hosts("127.0.0.1", 8765)))
    client.base_url = "http://127.0.0.1:8765"
    bearer = {"Authorization": "Bearer s3cret"}
    assert client.get("/").status_code == 200  # the page itself holds nothing
    assert client.get("/state").status_code == 401
    state = client.get("/state", headers=bearer).json()
    photo = state["cards"][0]["photo"]
    assert client.get(f"/photo/{photo}", headers=bearer).headers["content-type"] == "image/jpeg"
    assert client.get("/photo/99999", headers=bearer).status_code == 404
    foreign = {**bearer, "Origin": "http://evil.example"}
    assert client.post("/undo", headers=foreign).status_code == 403
    rebound = {**bearer, "Host": "evil.example"}
    assert client.get("/state", headers=rebound).status_code == 403
    wrong = client.post("/label", json={"photo": photo, "label": "tulip"}, headers=bearer)
    assert wrong.status_code == 409 and "not one of" in wrong.json()["detail"]
    assert (
        client.post("/label", json={"photo": -1, "label": "x"}, headers=bearer).status_code == 422
    )
    done = client.post("/label", json={"photo": photo, "label": "daisy"}, headers=bearer).json()
    assert done["labelled"]["daisy"] == 1 and photo not in [c["photo"] for c in done["cards"]]


def test_a_pool_with_unreadable_files_copies_and_labelled_photos(pool, cache_dir, tmp_path):
    from headstart.model.prediction import image_list

    dataset = tmp_path / "labelled"
    copy_photos(pool[:2], dataset / "daisy")  # labelled already
    shutil.copy(pool[5], pool[0].parent / "again.jpg")  # an exact copy in the pool
    (pool[0].parent / "broken.jpg").write_bytes(b"GIF89a broken")
    listing = tmp_path / "pool.csv"
    listing.write_text("path\n" + "".join(f"{p}\n" for p in sorted(pool[0].parent.iterdir())))
    paths = image_list([str(listing)])
    extractor = default_extractor(paths, RunContext(cache_dir=cache_dir))
    session = Session(paths, dataset, ["daisy", "sunflower"], extractor)
    left_out = session.left_out
    assert left_out.unreadable == 1 and left_out.already_labelled == 2 and left_out.copies >= 1
    assert session.progress().left == len(paths) - 1 - 2 - left_out.copies
    assert session.progress().labelled == {"daisy": 2, "sunflower": 0}
    shown = {str(session.photo(card.photo)).rsplit("/", 1)[-1] for card in session.cards()}
    assert not {pool[5].name, "again.jpg"} <= shown and "broken.jpg" not in shown


def test_photos_in_an_object_store_are_labelled_by_copy(
    object_store, cache_dir, monkeypatch, tmp_path
):
    for name, value in object_store.env.items():
        monkeypatch.setenv(name, value)
    photos = sorted(object_store.folder.rglob("*.jpg"))[:6]
    uris = [object_store.uri(p.relative_to(object_store.folder).as_posix()) for p in photos]
    extractor = default_extractor(uris, RunContext(cache_dir=cache_dir))
    session = Session(
        [image_location(uri) for uri in uris], tmp_path / "d", ["daisy", "sunflower"], extractor
    )
    card = session.cards()[0]
    written = session.label(card.photo, "daisy")
    source = photos[uris.index(str(session.photo(card.photo)))]
    assert written.read_bytes() == source.read_bytes() and written.name == source.name
