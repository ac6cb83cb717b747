"""The studio as its user feels it: from the request that adds a photo to the answer that the
model has trained on it, and from a webcam frame's request to its prediction.

A project of 20 flowers5 photos in each of two classes is trained once (warm cache); then, on
a real server over loopback, photos are added one at a time to the project at rest, each timed
from the upload until GET /api/model reports the model in use trained on it (the refitted
head; the full training follows), and a 640x480 frame is predicted repeatedly.
The baseline, in the same run, is the terminal's loop for the same two steps: copy the photo
into the class folder and run `headstart train`, then `headstart predict`, from the shell.

    python bench/studio.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from data_paths import DATASETS, require
from PIL import Image

from headstart import train
from headstart.serving.app import allowed_hosts
from headstart.studio.app import create_studio_app
from headstart.studio.project import Project
from headstart.studio.trainer import Trainer

CLASSES = ("daisy", "sunflower")
START = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    root = require(DATASETS / "flowers5")
    photos = {label: sorted((root / label).glob("*.jpg")) for label in CLASSES}
    frame = _frame(photos["daisy"][-1])
    with tempfile.TemporaryDirectory() as scratch:
        project = Project(Path(scratch) / "project")
        trainer = Trainer(project, train)
        with _served(trainer) as client:
            for label in CLASSES:
                client.post("/api/classes", json={"name": label})
                for photo in photos[label][:START]:
                    client.post(f"/api/classes/{label}/photos", content=photo.read_bytes())
            client.get("/api/model", params={"wait": 120})
            extra = photos["daisy"][START : START + args.repeats]
            added, trained = zip(*(_add_and_wait(client, photo) for photo in extra), strict=True)
            _idle(client)
            client.post("/api/predict", content=frame)  # warm
            predicted = [
                _timed(lambda: client.post("/api/predict", content=frame)) for _ in range(20)
            ]
        cli_added, cli_predicted = _terminal(project, photos["sunflower"][START:], frame, 3)
    _report("add a photo, the model in use trained on it", added, cli_added, "copy + train")
    _report("add a photo, full training and accuracy done", trained, cli_added, "copy + train")
    _report("predict a 640x480 frame", predicted, cli_predicted, "headstart predict")


def _add_and_wait(client: httpx.Client, photo: Path) -> tuple[float, float]:
    """Seconds from the upload until predictions use a model trained on the photo (its head
    refitted), and until the full training and the page's accuracy are done too."""
    photos = _idle(client)["photos"]
    start = time.perf_counter()
    client.post("/api/classes/daisy/photos", content=photo.read_bytes())
    state = client.get("/api/model", params={"wait": 60}).json()
    in_use = time.perf_counter() - start
    assert state["current"] and state["photos"] == photos + 1, state
    _idle(client)
    return in_use, time.perf_counter() - start


def _idle(client: httpx.Client) -> dict:
    """The model's state once the full training after the last change, and its accuracy, are
    done: each photo is added to a project at rest."""
    while (state := client.get("/api/model", params={"wait": 60}).json())["training"]:
        time.sleep(0.05)
    return state


def _terminal(project: Project, photos: list[Path], frame: bytes, repeats: int):
    """The same steps from the shell: each a whole command, as a terminal user runs them."""
    command = [str(Path(sys.executable).with_name("headstart"))]
    cache = ["--cache-dir", str(project.cache)]
    added, predicted = [], []
    frame_file = project.root / "frame.jpg"
    frame_file.write_bytes(frame)
    for photo in photos[:repeats]:
        start = time.perf_counter()
        shutil.copy(photo, project.photos / "sunflower" / photo.name)
        train_args = ["train", str(project.photos), "-o", str(project.model), "--quiet"]
        subprocess.run([*command, *train_args, "--strategy", "linear", *cache], check=True)
        added.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run(
            [*command, "predict", str(project.model), str(frame_file), *cache],
            check=True,
            capture_output=True,
        )
        predicted.append(time.perf_counter() - start)
    return added, predicted


def _served(trainer: Trainer):
    """The studio on a free loopback port, in a thread; an httpx client for it."""
    import contextlib
    import socket

    @contextlib.contextmanager
    def running():
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        app = create_studio_app(trainer, None, allowed_hosts("127.0.0.1", port))
        server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            yield client
        server.should_exit = True
        thread.join()

    return running()


def _frame(photo: Path) -> bytes:
    image = Image.open(photo).convert("RGB").resize((640, 480))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _report(what: str, studio, terminal: list[float], baseline: str) -> None:
    ours, theirs = statistics.median(studio), statistics.median(terminal)
    print(
        f"{what}: studio median {1000 * ours:.0f} ms (max {1000 * max(studio):.0f}, "
        f"n={len(studio)}); {baseline} {1000 * theirs:.0f} ms; ratio {ours / theirs:.3f}"
    )


if __name__ == "__main__":
    main()
