"""The shared feature store's format: headstart's Parquet parts against Lance, in one run.

What the driver does with a store: append a run's new vectors in parts, store the same vectors
again (a re-run: nothing may be added), and look up the vectors of a run's images by digest
from a fresh handle (a later command). Both get the same synthetic float16 vectors (1,792
wide, as Lite0's default features) keyed by 20-byte digests. Lance (`pip install pylance`,
not a headstart dependency) is measured with its merge_insert upsert and a B-tree index on the
digest, as issue 11 proposed; the script says so and stops if it is not installed.

    python bench/feature_store.py [--rows 100000] [--lookups 10000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from headstart.features.store import PART_ROWS, ParquetFeatureStore

WIDTH = 1792


def rows(count: int) -> tuple[list[bytes], np.ndarray]:
    generator = np.random.default_rng(0)
    digests = [generator.bytes(20) for _ in range(count)]
    return digests, generator.standard_normal((count, WIDTH), dtype=np.float32).astype(np.float16)


def parquet(folder: Path, digests, vectors, wanted) -> dict[str, float]:
    times = {}
    started = time.perf_counter()
    store = ParquetFeatureStore(folder, folder)
    for start in range(0, len(digests), PART_ROWS):
        chunk = range(start, min(start + PART_ROWS, len(digests)))
        store.put_many("fp", [(digests[i], vectors[i]) for i in chunk])
    store.flush()
    times["write"] = time.perf_counter() - started
    started = time.perf_counter()
    again = ParquetFeatureStore(folder, folder)
    have = again.get_many("fp", digests)
    again.put_many("fp", [(d, v) for d, v in zip(digests, vectors, strict=True) if d not in have])
    again.flush()
    times["same again"] = time.perf_counter() - started
    started = time.perf_counter()
    found = ParquetFeatureStore(folder, folder).get_many("fp", wanted)
    times["lookup"] = time.perf_counter() - started
    assert len(found) == len(wanted) and again.count("fp") == len(digests)
    return times


def lance(folder: Path, digests, vectors, wanted) -> dict[str, float]:
    import lance

    def table(index: range) -> pa.Table:
        flat = pa.array(vectors[index.start : index.stop].reshape(-1))
        return pa.table(
            {
                "digest": pa.array([digests[i] for i in index], pa.binary()),
                "vector": pa.FixedSizeListArray.from_arrays(flat, WIDTH),
            }
        )

    uri = str(folder / "features.lance")
    times = {}
    started = time.perf_counter()
    for start in range(0, len(digests), PART_ROWS):
        chunk = range(start, min(start + PART_ROWS, len(digests)))
        lance.write_dataset(table(chunk), uri, mode="append")
    lance.dataset(uri).create_scalar_index("digest", "BTREE")
    times["write"] = time.perf_counter() - started
    started = time.perf_counter()
    dataset = lance.dataset(uri)
    for start in range(0, len(digests), PART_ROWS):
        chunk = range(start, min(start + PART_ROWS, len(digests)))
        dataset.merge_insert("digest").when_not_matched_insert_all().execute(table(chunk))
    times["same again"] = time.perf_counter() - started
    started = time.perf_counter()
    literals = ", ".join(f"X'{d.hex()}'" for d in wanted)
    found = lance.dataset(uri).to_table(filter=f"digest IN ({literals})")
    times["lookup"] = time.perf_counter() - started
    assert found.num_rows == len(wanted) and lance.dataset(uri).count_rows() == len(digests)
    return times


def size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=10_000)
    args = parser.parse_args()
    digests, vectors = rows(args.rows)
    wanted = [digests[i] for i in np.random.default_rng(1).choice(args.rows, args.lookups)]
    wanted = list(dict.fromkeys(wanted))
    results = {}
    for name, run in (("parquet parts", parquet), ("lance", lance)):
        folder = Path(tempfile.mkdtemp(prefix=f"headstart-store-{name.split()[0]}-"))
        try:
            results[name] = run(folder, digests, vectors, wanted) | {"MB": size(folder) / 1e6}
        except ImportError:
            print("pylance is not installed: pip install pylance to compare with Lance")
    print(f"{args.rows:,} vectors of {WIDTH} float16; {len(wanted):,} looked up")
    columns = ("write", "same again", "lookup", "MB")
    print(f"{'':14}" + "".join(f"{c:>12}" for c in columns))
    for name, values in results.items():
        print(f"{name:14}" + "".join(f"{values[c]:>12.2f}" for c in columns))
    if len(results) == 2:
        ratios = {c: results["lance"][c] / results["parquet parts"][c] for c in columns}
        print(f"{'lance/parquet':14}" + "".join(f"{ratios[c]:>11.2f}x" for c in columns))


if __name__ == "__main__":
    main()
