"""The shared feature store: Parquet parts keyed like the cache, written whole or not at all."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import headstart

from headstart.features.cache import FeatureCache
from headstart.features.store import ParquetFeatureStore, copy_features


def rows(count: int, start: int = 0, dim: int = 6) -> list[tuple[bytes, np.ndarray]]:
    generator = np.random.default_rng(start)
    return [
        (i.to_bytes(20, "big"), generator.normal(size=dim).astype(np.float16))
        for i in range(start, start + count)
    ]


def parts(store_dir, fingerprint="fp") -> list:
    return sorted((store_dir / fingerprint).glob("part-*.parquet"))


def test_vectors_come_back_exactly_and_from_another_process_view(tmp_path):
    store = ParquetFeatureStore(tmp_path / "store", tmp_path)
    written = rows(30)
    store.put_many("fp", written)
    store.flush()
    reader = ParquetFeatureStore(f"file://{tmp_path / 'store'}", tmp_path)  # a URI works too
    found = reader.get_many("fp", [d for d, _ in written] + [b"\0" * 20])
    assert len(found) == 30
    for digest, vector in written:
        assert np.array_equal(found[digest], vector)
    assert reader.get_many("other", [written[0][0]]) == {}
    assert reader.count("fp") == 30 and reader.fingerprints() == ["fp"]


def test_storing_the_same_features_again_adds_nothing(tmp_path):
    store = ParquetFeatureStore(tmp_path / "store", tmp_path)
    store.put_many("fp", rows(10))
    store.flush()
    again = ParquetFeatureStore(tmp_path / "store", tmp_path)
    again.put_many("fp", rows(10))
    again.flush()
    assert len(parts(tmp_path / "store")) == 1
    assert again.count("fp") == 10


def test_a_killed_run_keeps_every_full_part_and_nothing_half_written(tmp_path):
    store = ParquetFeatureStore(tmp_path / "store", tmp_path, part_rows=8)
    store.put_many("fp", rows(20))  # two full parts written, four rows still queued
    # killed here: no flush
    (tmp_path / "store" / "fp" / ".part-half.parquet").write_bytes(b"PAR1 half")  # as if mid-write
    reopened = ParquetFeatureStore(tmp_path / "store", tmp_path)
    assert reopened.count("fp") == 16
    found = reopened.get_many("fp", [d for d, _ in rows(20)])
    assert len(found) == 16


def test_a_damaged_part_is_a_miss_with_a_warning(tmp_path, capsys):
    store = ParquetFeatureStore(tmp_path / "store", tmp_path)
    store.put_many("fp", rows(5))
    store.flush()
    parts(tmp_path / "store")[0].write_bytes(b"not parquet at all")
    reopened = ParquetFeatureStore(tmp_path / "store", tmp_path)
    assert reopened.get_many("fp", [d for d, _ in rows(5)]) == {}
    assert "damaged feature store part" in capsys.readouterr().err


def test_features_move_between_the_cache_and_a_store(tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    cache.put_many("fp", rows(12))
    store = ParquetFeatureStore(tmp_path / "store", tmp_path)
    assert copy_features(cache, store) == {"fp": 12}
    assert copy_features(cache, store) == {"fp": 0}
    other = FeatureCache(tmp_path / "other")
    assert copy_features(ParquetFeatureStore(tmp_path / "store", tmp_path), other) == {"fp": 12}
    digests = [d for d, _ in rows(12)]
    assert {d: v.tolist() for d, v in other.get_many("fp", digests).items()} == {
        d: v.tolist() for d, v in cache.get_many("fp", digests).items()
    }


def test_cache_export_and_import_commands(tmp_path):
    FeatureCache(tmp_path / "cache").put_many("fp", rows(7))
    store = str(tmp_path / "store")
    exported = headstart("cache", "export", store, "--cache-dir", str(tmp_path / "cache"))
    assert exported.returncode == 0, exported.stderr
    assert "copied 7 features of 1 backbone(s)" in exported.stderr
    imported = headstart("cache", "import", store, "--cache-dir", str(tmp_path / "new"))
    assert "copied 7 features" in imported.stderr
    assert FeatureCache(tmp_path / "new").count("fp") == 7


@pytest.mark.parametrize("location", ["nope://bucket/x", "/dev/null/store"])
def test_a_store_that_cannot_be_opened_is_one_clear_line(tmp_path, location):
    result = headstart("cache", "export", location, "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 1
    assert "feature store" in result.stderr and "Traceback" not in result.stderr


def test_parts_of_another_layout_are_misses_with_a_warning(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = ParquetFeatureStore(tmp_path / "store", tmp_path)
    store.put_many("fp", rows(4))
    store.flush()
    folder = tmp_path / "store" / "fp"
    narrow = ParquetFeatureStore(tmp_path / "other", tmp_path)
    narrow.put_many("fp", rows(3, start=10, dim=4))  # a part 4 features wide, not 6
    narrow.flush()
    next((tmp_path / "other" / "fp").glob("*.parquet")).rename(folder / "part-narrow.parquet")
    floats = pa.table({"digest": [b"\1" * 20], "vector": [[0.5, 0.25]]})  # not float16 bytes
    pq.write_table(floats, folder / "part-floats.parquet")
    reopened = ParquetFeatureStore(tmp_path / "store", tmp_path)
    digests = [d for d, _ in rows(4)] + [d for d, _ in rows(3, start=10)] + [b"\1" * 20]
    assert sorted(reopened.get_many("fp", digests)) == sorted(d for d, _ in rows(4))
    warnings = capsys.readouterr().err
    assert "4 features where the others have 6" in warnings
    assert "no vector column of float16 bytes" in warnings


def test_a_part_gone_after_it_was_listed_is_a_miss(tmp_path, capsys):
    store = ParquetFeatureStore(tmp_path / "store", tmp_path)
    store.put_many("fp", rows(5))
    store.flush()
    reader = ParquetFeatureStore(tmp_path / "store", tmp_path)
    assert reader.count("fp") == 5  # listed and indexed
    parts(tmp_path / "store")[0].unlink()  # then removed by someone else
    assert reader.get_many("fp", [d for d, _ in rows(5)]) == {}
    assert "went unreadable" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [("--ray", "", "--ray needs an address"), ("--feature-store", " ", "must be a non-empty")],
)
def test_blank_cluster_options_are_usage_errors(tmp_path, capsys, option, value, message):
    from conftest import usage_check

    result = usage_check(
        "train", str(tmp_path), "-o", str(tmp_path / "m"), option, value, capsys=capsys
    )
    assert result.returncode == 2 and message in result.stderr
