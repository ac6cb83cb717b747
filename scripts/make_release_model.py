"""Write a model folder with the headstart on PYTHONPATH (an older checkout's src), and what
it predicts, for tests/data/models: `PYTHONPATH=OLD/src python scripts/make_release_model.py OUT`.
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

import headstart
from headstart import FitSettings, RunContext

print(headstart.__file__)
data = Path("tests/data/flowers")
out = Path(sys.argv[1])
shutil.rmtree(out, ignore_errors=True)
# photos 0-11 of each species train and 12-19 validate, as for the tests' session model
root = Path(tempfile.mkdtemp()) / "flowers"
for label in ("daisy", "sunflower"):
    photos = sorted((data / label).glob("*.jpg"))
    (root / "train" / label).mkdir(parents=True)
    (root / "val" / label).mkdir(parents=True)
    for photo in photos[:12]:
        shutil.copy(photo, root / "train" / label / photo.name)
    for photo in photos[12:20]:
        shutil.copy(photo, root / "val" / label / photo.name)
context = RunContext(cache_dir=root.parent / "cache")
settings = FitSettings(strategy="linear")
classifier = headstart.train(root, out / "model", context=context, settings=settings)
held = [p for label in ("daisy", "sunflower") for p in sorted((data / label).glob("*.jpg"))[20:24]]
expected = [
    {
        "photo": str(photo.relative_to(data)),
        "labels": prediction.labels,
        "probabilities": prediction.probabilities,
        "unknown_score": prediction.unknown_score,
    }
    for photo, prediction in zip(held, classifier.predict(held, top_k=2), strict=True)
]
(out / "predictions.json").write_text(json.dumps(expected, indent=1) + "\n")
