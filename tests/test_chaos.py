"""Chaos: `train` killed with SIGKILL at random moments, caches and the cached backbone damaged
in every way seen; the next run always recovers and trains the same model. And the server
under a memory cap, fed hostile uploads, stays alive and right."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import hostile
import httpx
import pytest
from conftest import real_photos


def train_command(data: Path, model: Path, cache: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "headstart.cli",
        "train",
        str(data),
        "-o",
        str(model),
        "--cache-dir",
        str(cache),
        "--json",
    ]


def train(data: Path, model: Path, cache: Path) -> tuple[dict, str]:
    result = subprocess.run(train_command(data, model, cache), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout), result.stderr


def damage(cache: Path, how: str) -> None:
    database = cache / "features.sqlite3"
    if how == "onnx":
        (onnx_file,) = (cache / "onnx").glob("*.onnx")
        onnx_file.write_bytes(onnx_file.read_bytes()[:50_000])
        return
    with sqlite3.connect(database) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    if how == "garbage":
        database.write_bytes(os.urandom(database.stat().st_size))
    elif how == "truncated":
        database.write_bytes(database.read_bytes()[: database.stat().st_size // 2])
    elif how == "folder":
        database.unlink()
        database.mkdir()


@pytest.mark.slow
def test_train_recovers_from_kills_and_damaged_caches(presplit, trained, tmp_path):
    reference = trained[0].summary
    cache, model = tmp_path / "cache", tmp_path / "model"
    rng = random.Random(int(os.environ.get("HEADSTART_CHAOS_SEED", "0")))
    for _ in range(3):  # killed at random points: imports, export, extraction, training, saving
        process = subprocess.Popen(
            train_command(presplit, model, cache),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.5, 10.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
    summary, _ = train(presplit, model, cache)
    assert summary["val_accuracy"] == reference.val_accuracy
    assert summary["val_loss"] == pytest.approx(reference.val_loss, rel=1e-6)
    for how, said in [
        ("garbage", "moved aside"),
        ("truncated", "moved aside"),
        ("folder", "moved aside"),
        ("onnx", "exporting it again"),
    ]:
        damage(cache, how)
        if how == "onnx":  # so that the backbone has to run
            for path in cache.glob("features.sqlite3*"):
                path.unlink() if path.is_file() else path.rmdir()
        summary, stderr = train(presplit, model, cache)
        assert said in stderr, (how, stderr)
        assert summary["val_accuracy"] == reference.val_accuracy, how
        assert summary["val_loss"] == pytest.approx(reference.val_loss, rel=1e-6), how


SERVER = textwrap.dedent(
    """
    import resource, sys
    import uvicorn
    from headstart.export.runtime import OnnxClassifier
    from headstart.serving.app import create_app

    app = create_app(OnnxClassifier(sys.argv[1]))
    with open("/proc/self/status") as status:
        size = next(int(l.split()[1]) * 1024 for l in status if l.startswith("VmSize"))
    cap = size + 1536 * 1024 * 1024  # 1.5 GB of address space beyond what is loaded
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="error")
    """
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def hostile_uploads() -> list[tuple[str, bytes]]:
    import numpy as np

    big = hostile.encode(
        hostile.Image.fromarray(np.zeros((6300, 6300), np.uint16)), "PNG"
    )  # 39.7 MP of 16-bit grey in a small file
    photo = real_photos("daisy", 1, skip=16)[0].read_bytes()
    return [
        ("strip.png", hostile.strip(1_000_000, 1)),
        ("strip2.png", hostile.strip(20_000, 1)),
        ("tall.png", hostile.strip(1, 20_000)),
        ("crafted.tif", hostile.rational_strip_offsets_tiff()),
        *hostile.other_formats().items(),
        ("cut.jpg", photo[: len(photo) // 3]),
        ("noise.jpg", os.urandom(5000)),
        ("big16.png", big),
    ]


@pytest.mark.slow
def test_server_under_a_memory_cap_survives_hostile_uploads(exported):
    _, onnx_file = exported
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(onnx_file), str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    assert server.poll() is None and time.monotonic() < deadline
                    time.sleep(0.2)
            uploads = hostile_uploads()
            for _ in range(2):
                for name, data in uploads:
                    response = client.post("/predict", files=[("f", (name, data, "image/png"))])
                    if name == "big16.png":  # large but legal: answered, not refused
                        assert response.status_code == 200, response.text
                    else:
                        assert 400 <= response.status_code < 500, (name, response.text)
            photo = real_photos("sunflower", 1, skip=18)[0]
            from headstart.export.runtime import OnnxClassifier

            expected = OnnxClassifier(onnx_file).predict([photo], top_k=1)[0]
            response = client.post("/predict?top_k=1", content=photo.read_bytes())
            top = response.json()["predictions"][0]["top"][0]
            assert top["label"] == expected.label
            assert top["probability"] == pytest.approx(expected.probabilities[0], abs=1e-5)
            assert server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=30)
