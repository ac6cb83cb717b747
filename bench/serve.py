"""Bounded load test of `headstart serve` on loopback, against in-process prediction.

Trains (or reuses, via the feature cache) a model on hymenoptera, starts the server as a user
would, sends --requests single-photo requests from --clients concurrent clients, and prints
throughput, p50/p99 latency and the error count; then the same photos predicted in-process with
ONNX Runtime, the ceiling that HTTP overhead is measured against.

    python bench/serve.py [--clients 8] [--requests 500]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from data_paths import DATASETS, require

from headstart.export.onnx import export_classifier
from headstart.export.runtime import OnnxClassifier
from headstart.pipeline import train

DATA = DATASETS / "hymenoptera"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited with code {server.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.3)
    raise SystemExit("server did not start in time")


def load(url: str, photos: list[bytes], clients: int, requests: int) -> tuple[float, list, int]:
    def one(index: int) -> tuple[float, bool]:
        started = time.perf_counter()
        try:
            response = http.post(f"{url}/predict?top_k=1", content=photos[index % len(photos)])
            ok = response.status_code == 200
        except httpx.HTTPError:
            ok = False
        return time.perf_counter() - started, ok

    with httpx.Client(timeout=60, limits=httpx.Limits(max_connections=clients)) as http:
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(one, range(requests)))
        elapsed = time.perf_counter() - started
    return requests / elapsed, [t for t, _ in results], sum(not ok for _, ok in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    require(DATA)
    photos_paths = sorted((DATA / "val").rglob("*.jpg"))[:64]
    photos = [p.read_bytes() for p in photos_paths]
    with tempfile.TemporaryDirectory() as scratch:
        onnx_file = Path(scratch) / "model.onnx"
        export_classifier(train(DATA), onnx_file)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [
            sys.executable,
            "-m",
            "headstart.cli",
            "serve",
            str(onnx_file),
            "--port",
            str(port),
        ]
        server = subprocess.Popen(command, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            wait_until_up(url, server)
            rate, latencies, errors = load(url, photos, args.clients, args.requests)
        finally:
            server.terminate()
            server.wait(timeout=30)
        runtime = OnnxClassifier(onnx_file)
        started = time.perf_counter()
        for index in range(min(args.requests, 128)):
            pixels = runtime.preprocessing.pixels(photos[index % len(photos)])
            runtime.predict_pixels([pixels], top_k=1)
        in_process = min(args.requests, 128) / (time.perf_counter() - started)
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    print(f"{args.requests} requests from {args.clients} clients, one real photo each")
    print(f"server: {rate:.1f} req/s, p50 {p50:.0f} ms, p99 {p99:.0f} ms, errors {errors}")
    print(f"in-process ONNX Runtime, one image at a time: {in_process:.1f} img/s")
    print(f"ratio server/in-process: {rate / in_process:.2f}")
    if errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
