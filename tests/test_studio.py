"""`headstart studio`: its JSON API on a real project of real photos, and its hostile inputs."""

import io
import os
import shutil
import time
import zipfile

import numpy as np
import pytest
from conftest import CHROMEDRIVER, CHROMIUM, XRAYS, real_photos, running
from fastapi.testclient import TestClient
from PIL import Image

from headstart import train
from headstart.export.runtime import OnnxClassifier
from headstart.model.classifier import Classifier
from headstart.serving.app import Limits
from headstart.studio.app import create_studio_app
from headstart.studio.project import Project
from headstart.studio.trainer import Trainer

DAISIES, SUNFLOWERS = real_photos("daisy", 8), real_photos("sunflower", 8)
HELD_OUT = real_photos("daisy", 3, skip=24) + real_photos("sunflower", 3, skip=24)


TRAINERS: list[Trainer] = []


def trainer_for(folder) -> Trainer:
    """A project's trainer, left idle after the test that made it (its background work must
    not run into the next test's)."""
    trainer = Trainer(Project(folder), train)
    TRAINERS.append(trainer)
    return trainer


@pytest.fixture(autouse=True)
def idle_after():
    yield
    for trainer in TRAINERS:
        assert trainer.wait_idle(300)


def scored(client) -> dict:
    """The model's state once its cross-validated accuracy is in (it follows the model)."""
    deadline = time.monotonic() + 120
    while True:
        state = client.get("/api/model?wait=120").json()
        if state["accuracy"] is not None or not state["training"] or time.monotonic() > deadline:
            return state
        time.sleep(0.05)


def files(photos) -> list:
    return [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """A project made through the API: two classes of 8 real photos each, trained."""
    trainer = trainer_for(tmp_path_factory.mktemp("studio") / "project")
    client = TestClient(create_studio_app(trainer))
    for name, photos in (("daisy", DAISIES), ("sunflower", SUNFLOWERS)):
        assert client.post("/api/classes", json={"name": name}).status_code == 201
        response = client.post(f"/api/classes/{name}/photos", files=files(photos))
        assert response.status_code == 200, response.text
    return trainer, client


def test_photos_added_train_a_model_that_the_cli_reads(studio):
    trainer, client = studio
    state = scored(client)
    assert state["current"] and state["version"] >= 1 and state["message"] is None
    assert state["labels"] == ["daisy", "sunflower"] and state["photos"] == 16
    assert state["accuracy"] >= 0.8 and np.array(state["confusion"]).sum() == 16
    project = client.get("/api/project").json()
    assert project["classes"] == [{"name": "daisy", "count": 8}, {"name": "sunflower", "count": 8}]
    classifier = Classifier.load(trainer.project.model)  # a plain model folder
    expected = classifier.predict(HELD_OUT, top_k=1)
    for photo, prediction in zip(HELD_OUT, expected, strict=True):
        answer = client.post("/api/predict", content=photo.read_bytes()).json()
        assert answer["top"][0]["label"] == prediction.labels[0]
        assert answer["top"][0]["probability"] == pytest.approx(prediction.probabilities[0], 1e-4)
    right = [p.labels[0] == photo.parent.name for p, photo in zip(expected, HELD_OUT, strict=True)]
    assert sum(right) >= 4


def test_a_prediction_explains_itself_and_an_unreadable_one_is_refused(studio):
    _, client = studio
    client.get("/api/model?wait=120")
    answer = client.post("/api/predict?explain=true", content=HELD_OUT[0].read_bytes()).json()
    import base64

    overlay = Image.open(io.BytesIO(base64.b64decode(answer["heatmap_png"])))
    assert overlay.format == "PNG" and overlay.width >= 200
    refused = client.post("/api/predict", content=b"\xff\xd8 not a photo")
    assert refused.status_code == 415 and "not a readable image" in refused.json()["detail"]


def test_adding_one_photo_trains_again_on_it(studio):
    trainer, client = studio
    before = client.get("/api/model?wait=120").json()
    photo = real_photos("daisy", 1, skip=30)[0]
    added = client.post("/api/classes/daisy/photos", content=photo.read_bytes())
    assert added.status_code == 200 and added.json()["added"][0]["new"]
    again = client.post("/api/classes/daisy/photos", content=photo.read_bytes())
    assert not again.json()["added"][0]["new"]  # the same bytes are kept once
    after = client.get("/api/model?wait=120").json()
    assert after["version"] > before["version"] and after["photos"] == before["photos"] + 1
    assert after["head_only"]  # in use at once: the head refitted, the full training to come
    answer = client.post("/api/predict", content=photo.read_bytes()).json()["top"][0]
    assert trainer.wait_idle(120)
    trained = client.get("/api/model").json()
    assert not trained["head_only"] and trained["version"] == after["version"] + 1
    assert trained["photos"] == after["photos"] and trained["accuracy"] is not None
    again = client.post("/api/predict", content=photo.read_bytes()).json()["top"][0]
    assert again["label"] == answer["label"] == "daisy"  # both models: a photo it trained on
    name = added.json()["added"][0]["name"]
    thumbnail = client.get(f"/api/classes/daisy/photos/{name}")
    assert Image.open(io.BytesIO(thumbnail.content)).size[0] <= 160
    removed = client.delete(f"/api/classes/daisy/photos/{name}")
    assert removed.status_code == 200 and name not in client.get("/api/classes/daisy/photos").text
    assert any(p.name.endswith(name) for p in (trainer.project.trash).iterdir())  # not lost


def test_exports_are_the_onnx_model_and_the_photos_with_their_labels(studio):
    trainer, client = studio
    client.get("/api/model?wait=120")
    added = client.post("/api/classes/sunflower/photos", content=HELD_OUT[-2].read_bytes())
    assert added.json()["added"][0]["new"]
    response = client.get("/api/export/model.onnx")  # asked for while it trains on the photo
    assert response.status_code == 200
    path = trainer.project.model / "model.onnx"
    assert path.read_bytes() == response.content
    runtime = OnnxClassifier(path)
    expected = client.post("/api/predict", content=HELD_OUT[-1].read_bytes()).json()["top"][0]
    assert runtime.predict([HELD_OUT[-1]], top_k=1)[0].labels[0] == expected["label"]
    folder = Classifier.load(trainer.project.model)  # the export is the model folder's model
    pixels = np.stack([folder.preprocessing.pixels(p.read_bytes()) for p in HELD_OUT])
    ours = folder.probabilities(
        folder.extractor().extract_batch([p.read_bytes() for p in HELD_OUT]).features
    )
    assert np.abs(runtime.probabilities(pixels) - ours).max() < 1e-4
    archive = zipfile.ZipFile(io.BytesIO(client.get("/api/export/photos.zip").content))
    rows = archive.read("labels.csv").decode().splitlines()
    assert rows[0] == "path,label" and len(rows) == 1 + sum(trainer.project.counts().values())
    first_path, first_label = rows[1].split(",")
    assert first_path in archive.namelist() and first_path.startswith(first_label + "/")
    report = zipfile.ZipFile(io.BytesIO(client.get("/api/export/report.zip").content))
    assert {"report/report.html", "report/metrics.json"} <= set(report.namelist())
    assert "daisy" in report.read("report/report.html").decode()


def test_classes_are_renamed_and_deleted_into_the_trash(tmp_path):
    trainer = trainer_for(tmp_path / "p")
    client = TestClient(create_studio_app(trainer))
    client.post("/api/classes", json={"name": "cat"})
    client.post("/api/classes/cat/photos", files=files(DAISIES[:2]))
    assert client.patch("/api/classes/cat", json={"name": "dog"}).status_code == 200
    assert [c["name"] for c in client.get("/api/project").json()["classes"]] == ["dog"]
    assert client.delete("/api/classes/dog").status_code == 200
    assert client.get("/api/project").json()["classes"] == []
    kept = list((tmp_path / "p" / "trash").rglob("*.jpg"))
    assert len(kept) == 2  # deleted with its class, still on disk
    state = client.get("/api/model?wait=30").json()
    assert state["version"] == 0 and "at least 2 classes" in state["message"]


@pytest.mark.parametrize(
    "name",
    ["../up", "a/b", "a\\b", ".hidden", "c:d", "tab\there", "nul\x00", "x" * 256, "", "Daisy"],
)
def test_a_hostile_class_name_is_refused_and_nothing_is_made(studio, name):
    trainer, client = studio
    before = sorted(p.name for p in trainer.project.photos.iterdir())
    response = client.post("/api/classes", json={"name": name})
    assert response.status_code in (409, 422), response.text
    assert sorted(p.name for p in trainer.project.photos.iterdir()) == before


def test_hostile_photo_names_uploads_and_origins_are_refused(studio, tmp_path):
    trainer, client = studio
    for path in ["/api/classes/daisy/photos/..%2F..%2Fsecret", "/api/classes/../photos/x"]:
        assert client.get(path).status_code == 404
    assert client.delete("/api/classes/nothing").status_code == 404
    # a bad file among good ones is reported and left out; the good one is kept
    mixed = [*files(DAISIES[:1]), ("files", ("fake.jpg", b"GIF89a not really", "image/jpeg"))]
    response = client.post("/api/classes/daisy/photos", files=mixed).json()
    assert [r["filename"] for r in response["refused"]] == ["fake.jpg"] and response["added"]
    bomb = Image.new("L", (9000, 9000))  # 81 megapixels, a few kB as PNG
    buffer = io.BytesIO()
    bomb.save(buffer, "PNG")
    refused = client.post("/api/classes/daisy/photos", content=buffer.getvalue())
    assert refused.status_code == 415 and "over the limit" in refused.json()["detail"]
    small = TestClient(create_studio_app(trainer, limits=Limits(max_upload_bytes=1000)))
    assert small.post("/api/classes/daisy/photos", content=XRAYS[0].read_bytes()).status_code == 413
    other = client.post("/api/classes", json={"name": "x"}, headers={"Origin": "http://evil"})
    assert other.status_code == 403


def test_with_a_token_only_the_page_is_open(studio):
    trainer, _ = studio
    hosts = frozenset({"studio.example:8766"})
    client = TestClient(
        create_studio_app(trainer, "s3cret", hosts), base_url="http://studio.example:8766"
    )
    assert client.get("/").status_code == 200
    assert client.get("/api/project").status_code == 401
    good = client.get("/api/project", headers={"Authorization": "Bearer s3cret"})
    assert good.status_code == 200
    foreign = TestClient(
        create_studio_app(trainer, "s3cret", hosts), base_url="http://evil.example"
    )
    assert (
        foreign.get("/api/project", headers={"Authorization": "Bearer s3cret"}).status_code == 403
    )
    with pytest.raises(ValueError, match="empty token"):
        create_studio_app(trainer, " ")


DROP = """
const [target, photos] = arguments;
const transfer = new DataTransfer();
for (const [name, encoded] of photos) {
  const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
  transfer.items.add(new File([bytes], name, {type: "image/jpeg"}));
}
const event = {dataTransfer: transfer, bubbles: true, cancelable: true};
target.dispatchEvent(new DragEvent("drop", event));
"""


def drop(browser, target, photos) -> None:
    """Photos dropped on an element, as a drag from the desktop delivers them."""
    import base64

    encoded = [[p.name, base64.b64encode(p.read_bytes()).decode()] for p in photos]
    browser.execute_script(DROP, target, encoded)


@pytest.mark.slow  # a browser, a camera and several trainings: about a minute
def test_from_an_empty_project_to_an_exported_model_in_the_browser(browser, tmp_path):
    if not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"):
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from headstart.serving.app import allowed_hosts

    trainer = trainer_for(tmp_path / "project")
    wait = WebDriverWait(browser, 180)

    def card(name):
        return browser.find_element(By.CSS_SELECTOR, f".class[data-name='{name}']")

    def count(name) -> int:
        return int(card(name).get_attribute("data-count") or 0)

    with running(
        lambda port: create_studio_app(trainer, None, allowed_hosts("127.0.0.1", port))
    ) as url:
        browser.get(url)
        for name in ("camera", "daisy"):
            browser.find_element(By.ID, "class-name").send_keys(name)
            browser.find_element(By.CSS_SELECTOR, "#new-class button").click()
            wait.until(
                lambda d, name=name: d.find_elements(
                    By.CSS_SELECTOR, f".class[data-name='{name}']"
                ),
                f"the class {name} was not shown",
            )
        browser.find_element(By.ID, "camera").click()
        wait.until(
            lambda d: d.execute_script("return document.getElementById('video').videoWidth"),
            "the camera did not start",
        )
        record = card("camera").find_element(By.CSS_SELECTOR, ".record")
        ActionChains(browser).click_and_hold(record).pause(2.5).release().perform()
        wait.until(lambda d: count("camera") >= 3, "fewer than 3 photos recorded")
        picker = card("daisy").find_element(By.CSS_SELECTOR, "input.pick-files")
        picker.send_keys("\n".join(str(p) for p in DAISIES[:4]))
        wait.until(lambda d: count("daisy") == 4, "the picked photos were not added")
        drop(browser, card("daisy"), DAISIES[4:])
        wait.until(lambda d: count("daisy") == len(DAISIES), "the dropped photos were not added")
        state = browser.find_element(By.ID, "model-state")
        wait.until(
            lambda d: (
                state.get_attribute("data-current") == "true"
                and state.get_attribute("data-accuracy")
            ),
            "the model was not trained on every photo",
        )
        assert "cross-validated accuracy" in state.text
        browser.find_element(By.ID, "test-file").send_keys(str(HELD_OUT[0]))
        wait.until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#test-result .bars[data-label]"),
            "the tested photo got no answer",
        )
        tested = browser.find_element(By.CSS_SELECTOR, "#test-result .bars").get_attribute(
            "data-label"
        )
        browser.find_element(By.ID, "doctor").click()
        findings = browser.find_element(By.ID, "findings")
        wait.until(lambda d: findings.get_attribute("data-count"), "the doctor did not answer")
        browser.find_element(By.ID, "export-onnx").click()
        note = browser.find_element(By.ID, "export-note")
        wait.until(lambda d: note.get_attribute("data-done") == "model.onnx", "no export")
        browser.set_window_size(1200, 2300)
        screenshot = tmp_path / "studio.png"
        assert browser.save_screenshot(str(screenshot)) and screenshot.stat().st_size > 10_000
        assert not browser.find_element(By.ID, "message").text
    assert tested == "daisy"
    exported = OnnxClassifier(trainer.project.model / "model.onnx")
    assert exported.labels == ["camera", "daisy"]
    assert exported.predict([HELD_OUT[0]], top_k=1)[0].labels[0] == "daisy"
    shutil.copy(screenshot, os.environ.get("STUDIO_SCREENSHOT", tmp_path / "kept.png"))


@pytest.mark.slow  # the doctor on a project of its own: seconds
def test_the_doctor_finds_a_planted_copy_and_one_request_fixes_it(tmp_path):
    trainer = trainer_for(tmp_path / "p")
    client = TestClient(create_studio_app(trainer))
    for name, photos in (("daisy", DAISIES), ("sunflower", SUNFLOWERS)):
        client.post("/api/classes", json={"name": name})
        client.post(f"/api/classes/{name}/photos", files=files(photos))
    planted = client.post("/api/classes/sunflower/photos", content=DAISIES[3].read_bytes())
    name = planted.json()["added"][0]["name"]
    findings = client.get("/api/doctor").json()["findings"]
    about = [(f["issue"], f["label"]) for f in findings if f["photo"] == name]
    assert ("exact-conflict", "sunflower") in about and ("exact-conflict", "daisy") in about
    wrong = [f for f in findings if f["issue"] == "label-error" and f["label"] == "sunflower"]
    assert any(f["photo"] == name and f["suggested"] == "daisy" for f in wrong)
    moved = client.post(f"/api/classes/sunflower/photos/{name}/move", json={"to": "daisy"})
    assert moved.status_code == 200
    counts = {c["name"]: c["count"] for c in moved.json()["classes"]}
    assert counts == {"daisy": 8, "sunflower": 8}  # the copy was the daisy's own bytes
    after = client.get("/api/doctor").json()["findings"]
    assert not [f for f in after if f["issue"] == "exact-conflict"]
    refused = client.post(f"/api/classes/daisy/photos/{name}/move", json={"to": "../x"})
    assert refused.status_code == 404


@pytest.mark.slow  # a pool's features and a training: seconds
def test_labels_given_in_the_labelling_view_join_the_project(tmp_path, cache_dir):
    from conftest import copy_photos

    from headstart.context import RunContext
    from headstart.labelling.session import Session
    from headstart.labelling.suggest import default_extractor

    trainer = trainer_for(tmp_path / "p")
    pool = copy_photos(real_photos("daisy", 4, skip=20), tmp_path / "pool")
    for name, photos in (("daisy", DAISIES[:3]), ("sunflower", SUNFLOWERS[:3])):
        trainer.project.create_class(name)
        for photo in photos:
            trainer.project.add_photo(name, photo.read_bytes(), 10**7)
    extractor = default_extractor(pool, RunContext(cache_dir=cache_dir))
    session = Session(pool, trainer.project.photos, trainer.project.classes(), extractor)
    client = TestClient(create_studio_app(trainer, labelling=session))
    left = session.progress().left
    assert left >= 3 and client.get("/api/project").json()["labelling"] == {"left": left}
    assert "<html" in client.get("/label/").text
    card = client.get("/label/state").json()["cards"][0]
    given = client.post("/label/label", json={"photo": card["photo"], "label": "daisy"})
    assert given.status_code == 200
    state = client.get("/api/model?wait=120").json()
    assert state["current"] and state["photos"] == 7  # trained on the labelled photo too
    assert client.get("/api/project").json()["classes"][0] == {"name": "daisy", "count": 4}


@pytest.mark.slow  # fine-tuning one epoch on a CPU: a minute
def test_fine_tuning_runs_in_the_background_with_an_estimate_and_exports(tmp_path):
    trainer = trainer_for(tmp_path / "p")
    client = TestClient(create_studio_app(trainer))
    assert client.post("/api/finetune", json={"epochs": 1}).status_code == 409  # no model yet
    for name, photos in (("daisy", DAISIES), ("sunflower", SUNFLOWERS)):
        client.post("/api/classes", json={"name": name})
        client.post(f"/api/classes/{name}/photos", files=files(photos))
    client.get("/api/model?wait=120")
    before = client.get("/api/finetune").json()
    assert not before["running"] and not before["ready"] and before["estimate_seconds"] > 0
    assert client.post("/api/finetune", json={"epochs": 0}).status_code == 422
    started = client.post("/api/finetune", json={"epochs": 1})
    assert started.status_code == 202 and started.json()["running"]
    assert client.post("/api/finetune", json={"epochs": 1}).status_code == 409  # one at a time
    deadline = time.monotonic() + 600
    while client.get("/api/finetune").json()["running"] and time.monotonic() < deadline:
        time.sleep(1)
    done = client.get("/api/finetune").json()
    assert done["ready"] and done["message"] is None and done["elapsed_seconds"] > 0
    assert Classifier.load(tmp_path / "p" / "model-finetuned").fine_tuned
    exported = client.get("/api/export/finetuned.onnx")
    assert exported.status_code == 200
    runtime = OnnxClassifier(tmp_path / "p" / "model-finetuned" / "model.onnx")
    assert runtime.labels == ["daisy", "sunflower"]
    assert client.get("/api/model").json()["current"]  # the linear model is untouched


def test_the_command_serves_a_project_and_makes_a_token_beyond_loopback(tmp_path):
    import re
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "headstart.cli", "studio", str(tmp_path / "p")]
    process = subprocess.Popen(
        [*command, "--host", "0.0.0.0", "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "300"},
    )
    try:
        line = process.stderr.readline()
        token = re.search(r"#token=(\S+)", line).group(1)  # made for it: never served bare
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                bare = httpx.get(f"{url}/api/project", timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert bare.status_code == 401
        headers = {"Authorization": f"Bearer {token}"}
        project = httpx.get(f"{url}/api/project", headers=headers, timeout=5).json()
        assert project["classes"] == [] and (tmp_path / "p" / "photos").is_dir()
    finally:
        process.terminate()
        process.wait(30)
