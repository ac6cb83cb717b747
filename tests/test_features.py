import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import copy_photos, real_photos

from headstart.backbones import resolve_backbone
from headstart.backbones.network import PixelsToFeatures
from headstart.errors import HeadstartError
from headstart.features import FeatureCache, FeatureExtractor
from headstart.features.engines import TorchEngine


@pytest.fixture(scope="module")
def backbone(cache_dir):
    return resolve_backbone("efficientnet_lite0", cache_dir)


@pytest.fixture(scope="module")
def extractor(backbone, cache_dir):
    return FeatureExtractor(backbone, FeatureCache(cache_dir), engine="onnx")


def test_onnx_features_match_pytorch_on_real_photos(extractor, backbone):
    photos = real_photos("daisy", 3, skip=12) + real_photos("sunflower", 3, skip=12)
    pixels = np.stack([backbone.preprocessing.pixels(p.read_bytes()) for p in photos])
    fast = extractor.engine(pixels)
    module = PixelsToFeatures(backbone.build_module(), backbone.preprocessing)
    reference = TorchEngine(module, "cpu")(pixels)
    assert fast.shape == reference.shape == (6, 1984)  # pooled head and stages 3-6
    assert np.abs(fast - reference).max() < 1e-3 * np.abs(reference).max()


def test_extract_batch_takes_bytes_and_reports_bad_ones(extractor):
    good = [p.read_bytes() for p in real_photos("sunflower", 2)]
    batch = extractor.extract_batch([good[0], b"not an image", good[1]])
    assert batch.indices == [0, 2]
    assert batch.features.shape == (2, 1984)
    assert list(batch.errors) == [1] and "not a readable image" in batch.errors[1]


def test_second_run_reads_the_cache_and_runs_no_backbone(tmp_path, backbone, cache_dir):
    photos = copy_photos(real_photos("daisy", 6), tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    first = FeatureExtractor(backbone, cache, engine="onnx")
    first.engine = FeatureExtractor(
        backbone, FeatureCache(cache_dir), "onnx"
    ).engine  # reuse export
    cold = first.extract_files(photos)
    assert (cold.computed, cold.from_cache) == (6, 0)
    second = FeatureExtractor(backbone, FeatureCache(tmp_path / "cache"), engine="onnx")
    warm = second.extract_files(photos)
    assert (warm.computed, warm.from_cache) == (0, 6)
    assert "engine" not in second._shared  # the model was never even loaded
    np.testing.assert_array_equal(cold.features, warm.features)


def test_a_file_saved_anew_during_a_run_cannot_poison_the_cache(tmp_path, extractor, monkeypatch):
    """Before: hashed on one read, decoded on a second, so the old content's key got the new
    content's features for good."""
    import headstart.features.extract as extract

    daisy, sunflower = copy_photos(real_photos("daisy", 1, skip=23), tmp_path / "a") + copy_photos(
        real_photos("sunflower", 1, skip=23), tmp_path / "b"
    )
    original = daisy.read_bytes()
    hashed = extract._digest_file

    def digest_then_overwrite(path):
        digest = hashed(path)
        if Path(path) == daisy:
            # an editor saves the file between the two reads
            daisy.write_bytes(sunflower.read_bytes())
        return digest

    cache = FeatureCache(tmp_path / "cache")
    racing = FeatureExtractor(extractor.backbone, cache, "onnx")
    racing.engine = extractor.engine
    monkeypatch.setattr(extract, "_digest_file", digest_then_overwrite)
    raced = racing.extract_files([daisy])
    monkeypatch.undo()
    sunflower_features = extractor.extract_files([sunflower]).features
    np.testing.assert_array_equal(raced.features, sunflower_features)  # what the file now holds
    daisy.write_bytes(original)
    again = racing.extract_files([daisy])
    fresh = extractor.extract_files([daisy])
    assert again.computed == 1  # the old content's key was never written
    np.testing.assert_array_equal(again.features, fresh.features)


def test_adding_images_computes_only_the_new_ones(tmp_path, extractor):
    photos = copy_photos(real_photos("sunflower", 8, skip=20), tmp_path)
    extractor.extract_files(photos[:5])
    result = extractor.extract_files(photos)
    assert (result.computed, result.from_cache) == (3, 5)


def test_bad_files_are_skipped_with_their_reason(tmp_path, extractor):
    photos = copy_photos(real_photos("daisy", 2, skip=30), tmp_path)
    text = tmp_path / "notes.jpg"
    text.write_text("a text file named .jpg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(photos[0].read_bytes()[:2000])
    result = extractor.extract_files([photos[0], text, truncated, photos[1]])
    assert result.kept == [0, 3]
    assert [path.name for path, _ in result.skipped] == ["notes.jpg", "truncated.jpg"]
    assert all("not a readable image" in reason for _, reason in result.skipped)


def test_a_killed_write_is_never_read_back(tmp_path):
    """A process killed inside a write leaves no entry behind, and the cache stays usable."""
    script = textwrap.dedent(
        f"""
        import os, numpy as np
        from headstart.features.cache import FeatureCache
        cache = FeatureCache({str(tmp_path)!r})
        cache.put_many("fp", [(b"done", np.ones(4, np.float32))])
        cache._db.execute("BEGIN IMMEDIATE")
        cache._db.execute("INSERT INTO features VALUES ('fp', x'6b696c6c6564', 4, x'0000')")
        os._exit(9)  # killed before the commit
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert result.returncode == 9
    cache = FeatureCache(tmp_path)
    found = cache.get_many("fp", [b"done", b"killed"])
    assert list(found) == [b"done"]
    cache.put_many("fp", [(b"after", np.zeros(4, np.float32))])
    assert cache.count("fp") == 2


def test_a_damaged_row_is_a_miss_not_a_wrong_vector(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.put_many("fp", [(b"a", np.ones(8, np.float32))])
    with sqlite3.connect(cache.path) as db:
        db.execute("UPDATE features SET vector = x'0000' WHERE digest = ?", (b"a",))
    assert cache.get_many("fp", [b"a"]) == {}


def test_two_processes_share_one_cache(tmp_path):
    script = textwrap.dedent(
        """
        import sys, numpy as np
        from headstart.features.cache import FeatureCache
        cache = FeatureCache(sys.argv[1])
        for batch in range(20):
            keys = [f"{sys.argv[2]}-{batch}-{i}".encode() for i in range(50)]
            cache.put_many("fp", [(key, np.full(64, 1.0, np.float32)) for key in keys])
        """
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path), name]) for name in ("a", "b")
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    cache = FeatureCache(tmp_path)
    assert cache.count("fp") == 2000
    with sqlite3.connect(Path(cache.path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_cache_damaged_while_open_is_moved_aside_on_the_next_write(tmp_path, capsys, monkeypatch):
    """SQLite notices damage done under an open connection only when it reads those pages;
    the write that does is made to fail as it would."""
    cache = FeatureCache(tmp_path)
    vector = np.ones(4, np.float16)
    cache.put_many("fp", [(b"a" * 20, vector)])
    real_insert = FeatureCache._insert

    def damaged_once(self, rows):
        monkeypatch.setattr(FeatureCache, "_insert", real_insert)
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(FeatureCache, "_insert", damaged_once)
    cache.put_many("fp", [(b"b" * 20, vector)])
    assert "moved aside" in capsys.readouterr().err
    assert cache.count("fp") == 1 and list(tmp_path.glob("features.sqlite3.damaged-*"))
    assert list(cache.get_many("fp", [b"b" * 20])) == [b"b" * 20]


def test_a_float16_feature_matrix_trains_the_head_a_float32_one_does(extractor, monkeypatch):
    """Held at float16 and read a few rows at a time, real photos' features give the same
    linear head and the same logits as the float32 matrix, and the same values."""
    from headstart.features import blocks
    from headstart.training.solver import fit_linear

    photos = real_photos("daisy", 12) + real_photos("sunflower", 12)
    wide = extractor.extract_files(photos).features
    half = extractor.extract_files(photos, dtype=np.float16).features
    assert half.dtype == np.float16 and np.array_equal(half.astype(np.float32), wide)
    y = np.repeat([0, 1], 12)
    train, val = np.arange(24) % 4 != 0, np.arange(24) % 4 == 0
    whole = fit_linear(wide[train], y[train], wide[val], y[val], 2)
    monkeypatch.setattr(blocks, "BLOCK_ROWS", 5)
    monkeypatch.setattr(blocks, "copy_budget", lambda: 0)
    blocked = fit_linear(half[train], y[train], half[val], y[val], 2)
    assert blocked.l2 == whole.l2
    # The same optimum at every strength, to the solver's tolerance: sums taken in another
    # order take other steps, and 18 images in 1,984 dimensions leave flat directions.
    for mine, theirs in zip(blocked.history, whole.history, strict=True):
        assert mine["train_loss"] == pytest.approx(theirs["train_loss"], abs=1e-6)
    np.testing.assert_allclose(blocked.weight, whole.weight, atol=2e-3)
    head, other = fit_head_from(whole), fit_head_from(blocked)
    np.testing.assert_allclose(head.logits(half), head.logits(wide), rtol=1e-6, atol=1e-6)
    assert np.array_equal(other.logits(half).argmax(1), head.logits(wide).argmax(1))


def fit_head_from(fit):
    from headstart.model.heads import Head, HeadConfig

    config = HeadConfig("linear", fit.weight.shape[1], fit.weight.shape[0])
    return Head(config, {"1.weight": fit.weight, "1.bias": fit.bias})


@pytest.mark.parametrize("store", ["cache", "parquet"])
def test_a_vector_that_is_not_finite_is_a_miss(tmp_path, store):
    """Before: NaN vectors in a damaged store trained a model its own loader refused."""
    from headstart.features.store import ParquetFeatureStore

    where = FeatureCache(tmp_path) if store == "cache" else ParquetFeatureStore(tmp_path / "s")
    good, bad = np.ones(4, np.float32), np.array([1.0, np.nan, 0.0, np.inf], np.float32)
    where.put_many("fp", [(b"g" * 20, good), (b"b" * 20, bad)])
    where.flush()
    assert list(where.get_many("fp", [b"g" * 20, b"b" * 20])) == [b"g" * 20]


def test_a_model_that_is_not_finite_is_not_saved_over_a_good_one(trained, tmp_path):
    import copy

    from headstart.model.heads import Head

    classifier, _ = trained
    model = tmp_path / "model"
    classifier.save(model)
    before = (model / "headstart.json").read_text()
    broken = {k: np.full_like(v, np.nan) for k, v in classifier.head.parameters.items()}
    nan_head = copy.copy(classifier)
    nan_head.head = Head(classifier.head_config, broken)
    with pytest.raises(HeadstartError, match="holds NaN or infinity"):
        nan_head.save(model)
    assert (model / "headstart.json").read_text() == before
