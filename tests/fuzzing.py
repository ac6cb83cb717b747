"""A seeded fuzzer for everything that decodes untrusted image bytes.

Mutates real photos saved in every supported format (bit flips, truncation, header fields set to
extreme values, spliced, duplicated and deleted chunks, extreme sizes and aspect ratios) and
feeds each input to the decoder; every tenth also to the HTTP server and (the last 300 of
those, in one batch at the end) to `predict` with a model folder and with an exported ONNX
file. Run as a script so that its peak memory (ru_maxrss) is its own:

    python tests/fuzzing.py --seconds 600 --model MODEL_FOLDER --onnx MODEL.onnx --cache CACHE

It prints one JSON line: inputs tried, outcomes, escaped exceptions and files over the bound.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import resource
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
from PIL import Image

# Peak growth allowed over the warmed-up process for any input: a 40 MP WebP or PNG, the
# largest decoded at full size, takes about 160 MB.
MEMORY_BOUND_MB = 200
_PREDICTED = 300  # the most kept inputs that go through both predict paths at the end
_EXTREMES = [0, 1, 2, 255, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF]


def seed_files(photo: Path) -> list[tuple[str, bytes]]:
    image = Image.open(photo).convert("RGB").resize((96, 64))
    variants = [
        ("png", image, "PNG", {}),
        ("jpg", image, "JPEG", {"quality": 80}),
        ("gif", image.convert("P"), "GIF", {}),
        ("bmp", image, "BMP", {}),
        ("tif", image, "TIFF", {"compression": "tiff_lzw"}),
        ("webp", image, "WEBP", {}),
        ("png", image.convert("RGBA"), "PNG", {}),
        ("png", Image.fromarray(np.asarray(image.convert("L"), np.uint16) * 257), "PNG", {}),
        ("jpg", image.convert("CMYK"), "JPEG", {}),
    ]
    files = []
    for suffix, picture, format, options in variants:
        buffer = io.BytesIO()
        picture.save(buffer, format, **options)
        files.append((suffix, buffer.getvalue()))
    return files


def extreme_image(rng: random.Random) -> tuple[str, bytes]:
    format, suffix = rng.choice([("PNG", "png"), ("GIF", "gif"), ("TIFF", "tif"), ("BMP", "bmp")])
    long_side = rng.choice([2_000, 20_000, 65_535] if format == "GIF" else [20_000, 1_000_000])
    size = (long_side, 1) if rng.random() < 0.5 else (1, long_side)
    buffer = io.BytesIO()
    Image.new("RGB", size, (rng.randrange(256), 0, 0)).save(buffer, format)
    return suffix, buffer.getvalue()


def mutate(data: bytes, rng: random.Random, seeds: list[tuple[str, bytes]]) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(6)
        if kind == 0 and out:  # bit flips
            for _ in range(rng.randint(1, 8)):
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        elif kind == 1 and len(out) > 1:  # truncation
            del out[rng.randrange(1, len(out)) :]
        elif kind == 2 and len(out) > 8:  # a header field set to an extreme value
            at = rng.randrange(min(len(out) - 4, 64))
            width = rng.choice([1, 2, 4])
            value = rng.choice(_EXTREMES) & ((1 << (8 * width)) - 1)
            out[at : at + width] = value.to_bytes(width, rng.choice(["big", "little"]))
        elif kind == 3 and out:  # a chunk duplicated
            start = rng.randrange(len(out))
            out[start:start] = out[start : start + rng.randint(1, 512)]
        elif kind == 4 and len(out) > 2:  # a chunk deleted
            start = rng.randrange(len(out))
            del out[start : start + rng.randint(1, 256)]
        elif kind == 5:  # spliced with another file
            other = rng.choice(seeds)[1]
            cut = rng.randrange(max(len(out), 1))
            out = out[:cut] + other[rng.randrange(len(other)) :]
    return bytes(out)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def run(seconds: float, seed: int, photo: Path, model: Path, onnx: Path, cache: Path) -> dict:
    from fastapi.testclient import TestClient

    from headstart.context import RunContext
    from headstart.export.runtime import OnnxClassifier
    from headstart.model.classifier import Classifier
    from headstart.serving.app import create_app

    rng = random.Random(seed)
    seeds = seed_files(photo)
    runtime = OnnxClassifier(onnx)
    client = TestClient(create_app(runtime))
    classifier = Classifier.load(model, RunContext(cache_dir=cache))
    preprocessing = runtime.preprocessing
    for _, data in seeds:  # warm up every decoder before the baseline is taken
        preprocessing.pixels(data)
    baseline = peak_mb()
    outcomes = {"decoded": 0, "refused": 0, "served": 0, "predicted": 0}
    escaped: list[str] = []
    over: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="headstart-fuzz-"))
    count = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        suffix, base = extreme_image(rng) if rng.random() < 0.05 else rng.choice(seeds)
        data = mutate(base, rng, seeds) if rng.random() < 0.95 else base
        count += 1
        name = f"{count:06d}.{suffix}"
        before, peak_before = resident_mb(), peak_mb()
        try:
            pixels = preprocessing.pixels(data)
            assert pixels.shape == (*preprocessing.input_size, 3) and pixels.dtype == np.uint8
            outcomes["decoded"] += 1
        except ValueError:
            outcomes["refused"] += 1
        except BaseException as error:  # the defect this hunts for
            escaped.append(f"{name}: {type(error).__name__}: {error}")
            (folder / name).write_bytes(data)
            traceback.print_exc()
        # The process peak only moves when an input goes above every earlier one: then what
        # that input used is at least the new peak less the memory resident before it.
        if peak_mb() > peak_before and peak_mb() - before > MEMORY_BOUND_MB:
            over.append(f"{name}: peak {peak_mb() - before:.0f} MB over what was resident")
            (folder / name).write_bytes(data)
        if count % 10 == 0:
            (folder / name).write_bytes(data)
            response = client.post("/predict", files=[("files", (name, data, "image/png"))])
            if response.status_code not in (200, 400, 413, 415):
                escaped.append(f"{name}: server answered {response.status_code}")
            outcomes["served"] += 1
    loop_growth = peak_mb() - baseline
    files = sorted(folder.glob("*"))[-_PREDICTED:]
    for predictions in (runtime.predict(files), classifier.predict(files)):
        for prediction in predictions:
            if bool(prediction.error) == bool(prediction.labels):
                escaped.append(f"{prediction.path}: neither a prediction nor a reason")
            outcomes["predicted"] += 1
    return {
        "inputs": count,
        "outcomes": outcomes,
        "escaped": escaped,
        "over_memory_bound": over,
        "peak_growth_mb": round(loop_growth, 1),
        "kept_in": str(folder),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--photo", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    args = parser.parse_args()
    result = run(args.seconds, args.seed, args.photo, args.model, args.onnx, args.cache)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
