"""Shared fixtures: the real photos of tests/data (its README says whose), copied into temporary
folders."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

DATA = Path(__file__).resolve().parent / "data"
# Two flower species of 36 photos each. The session's model trains on photos 0-11 of each and
# validates on 12-19; 20-35 are never part of it (held out).
FLOWERS = DATA / "flowers"
XRAYS = sorted((DATA / "xray").rglob("*.jpg"))  # far from every flower: unknown images
IMAGENET_ANT = DATA / "imagenet" / "ants" / "1124525276_816a07c17f.jpg"
IMAGENET_BEE = DATA / "imagenet" / "bees" / "144098310_a4176fd54d.jpg"


def real_photos(label: str, count: int, skip: int = 0) -> list[Path]:
    """Photos `skip` to `skip + count` of one flower species, in a fixed order."""
    photos = sorted((FLOWERS / label).glob("*.jpg"))
    if skip + count > len(photos):
        raise ValueError(f"tests/data has {len(photos)} {label} photos, not {skip + count}")
    return photos[skip : skip + count]


def copy_photos(photos: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(photo, folder / photo.name)) for photo in photos]


def headstart(*args: str, cache_dir=None, env=None) -> subprocess.CompletedProcess:
    """Run the `headstart` command as a user does, in a fresh process."""
    command = [sys.executable, "-m", "headstart.cli", *args]
    if cache_dir is not None:
        command += ["--cache-dir", str(cache_dir)]
    env = {**os.environ, "COLUMNS": "300", **(env or {})}  # rich never folds a path
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)


def usage_check(*args: str, capsys: pytest.CaptureFixture) -> subprocess.CompletedProcess:
    """Run the command line in this process, for the checks that end before any work: the
    same main() and exit code as `headstart`, without a new interpreter's start-up."""
    from headstart.cli import main

    capsys.readouterr()
    argv, sys.argv = sys.argv, ["headstart", *args]
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 0
    finally:
        sys.argv = argv
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def jpeg_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One feature cache for the session, so the backbone is exported to ONNX once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def presplit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small pre-split dataset of real photos: {train,val}/{daisy,sunflower}."""
    root = tmp_path_factory.mktemp("flowers")
    for label in ("daisy", "sunflower"):
        copy_photos(real_photos(label, 12), root / "train" / label)
        copy_photos(real_photos(label, 8, skip=12), root / "val" / label)
    return root


@pytest.fixture(scope="session")
def trained(presplit: Path, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A classifier trained once on the small real-photo set, saved to a model folder."""
    from headstart import FitSettings, RunContext, train

    folder = tmp_path_factory.mktemp("model")
    context = RunContext(cache_dir=cache_dir)
    classifier = train(presplit, folder, settings=FitSettings(seed=0), context=context)
    return classifier, folder


@pytest.fixture(scope="session")
def exported(trained, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The trained classifier and its ONNX export."""
    from headstart.export.onnx import export_classifier

    classifier, _ = trained
    path = tmp_path_factory.mktemp("export") / "daisy_sunflower.onnx"
    export_classifier(classifier, path)
    return classifier, path


# Fine-tuning the top two units for three epochs: enough to change weights, quick on a CPU.
FINETUNE_SETTINGS_OPTIONS = {
    "strategy": "finetune",
    "finetune_epochs": 3,
    "unfreeze": "2",
    "augment": "light",
}


def finetune_run(data, folder, cache_dir, **options):
    from headstart import FitSettings, RunContext, train

    return train(
        data,
        folder,
        settings=FitSettings(**FINETUNE_SETTINGS_OPTIONS),
        val_percent=0,
        test_percent=0,
        context=RunContext(cache_dir=cache_dir),
        **options,
    )


@pytest.fixture(scope="session")
def train_only(presplit, tmp_path_factory):
    """The 24 training photos alone: with no validation split every epoch's weights are kept."""
    root = tmp_path_factory.mktemp("train_only")
    shutil.copytree(presplit / "train", root / "train")
    return root


@pytest.fixture(scope="session")
def finetuned(train_only, cache_dir, tmp_path_factory):
    """A classifier whose backbone's top two units were fine-tuned, and its model folder."""
    folder = tmp_path_factory.mktemp("finetuned")
    return finetune_run(train_only, folder, cache_dir), folder


@pytest.fixture(scope="session")
def exported_with_heat_maps(trained, tmp_path_factory):
    """The trained classifier exported with its heat maps, as `serve` exports it."""
    from headstart.export.onnx import export_classifier

    classifier, _ = trained
    path = tmp_path_factory.mktemp("export") / "why.onnx"
    export_classifier(classifier, path, explain=True)
    return classifier, path


@dataclass(frozen=True)
class ObjectStore:
    """A local S3 server holding `folder`'s images as s3://photos/<path in folder>."""

    folder: Path
    endpoint: str  # host:port

    @property
    def env(self) -> dict[str, str]:
        """How a user points pyarrow at a store: the environment."""
        return {
            "AWS_ENDPOINT_URL": f"http://{self.endpoint}",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def uri(self, key: str, in_query: bool = False) -> str:
        """The object's URI; `in_query` names the endpoint and keys in it (for processes
        that do not share this environment, such as Ray workers)."""
        if not in_query:
            return f"s3://photos/{key}"
        return (
            f"s3://test:test@photos/{key}"
            f"?endpoint_override={self.endpoint}&scheme=http&region=us-east-1"
        )


@pytest.fixture(scope="session")
def object_store(tmp_path_factory: pytest.TempPathFactory):
    """Real photos of daisies and sunflowers in a bucket of moto's S3 server, and as local files."""
    import logging

    import pyarrow.fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise

    folder = tmp_path_factory.mktemp("bucket")
    for label in ("daisy", "sunflower"):
        copy_photos(real_photos(label, 10, skip=20), folder / label)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    store = ObjectStore(folder, f"{host}:{port}")
    s3, _ = pyarrow.fs.FileSystem.from_uri(store.uri("", True) + "&allow_bucket_creation=true")
    s3.create_dir("photos")
    for path in sorted(folder.rglob("*.jpg")):
        with s3.open_output_stream(f"photos/{path.relative_to(folder).as_posix()}") as out:
            out.write(path.read_bytes())
    yield store
    server.stop()


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@contextlib.contextmanager
def running(make_app):
    """`make_app(port)` served on a free loopback port, in a thread: its address."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(make_app(port), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.started, "server did not start"
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=900,900",
        "--use-fake-ui-for-media-stream",  # a camera allowed without asking, and Chromium's
        "--use-fake-device-for-media-stream",  # test pattern as that camera
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
