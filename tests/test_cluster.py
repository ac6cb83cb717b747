"""Features, training and batch prediction on a local Ray cluster give what one machine gives."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray
from conftest import copy_photos, headstart, real_photos
from safetensors.numpy import load_file

from headstart import FitSettings, RunContext, load_dataset, train
from headstart.backbones.registry import resolve_backbone
from headstart.cluster import RayCluster, on_ray
from headstart.cluster.features import BackboneWorker
from headstart.errors import HeadstartError
from headstart.features.cache import FeatureCache
from headstart.features.extract import FeatureExtractor
from headstart.features.store import ParquetFeatureStore
from headstart.storage import CHECKPOINT_FILE


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module, two CPUs like the machines CI runs on."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=False,
        # the object-store test names its endpoint in the URIs, as the user here allows
        runtime_env={"env_vars": {"HEADSTART_URI_OPTIONS": "allow"}},
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """Real photos, one corrupt file and one path that does not exist."""
    folder = tmp_path_factory.mktemp("photos")
    files = copy_photos(
        real_photos("daisy", 10, skip=20) + real_photos("sunflower", 10, skip=20),
        folder,
    )
    corrupt = folder / "corrupt.jpg"
    corrupt.write_bytes(files[0].read_bytes()[:300])
    return [*files, corrupt, folder / "missing.jpg"]


def extract(photos, store_dir: Path, cache_dir: Path, runner=None):
    store = ParquetFeatureStore(store_dir, cache_dir)  # fresh features, the cached ONNX file
    backbone = resolve_backbone("efficientnet_lite0", cache_dir)
    return FeatureExtractor(backbone, store, runner=runner).extract_files(photos)


@pytest.mark.slow
def test_ray_features_equal_the_local_ones(cluster, photos, cache_dir, tmp_path):
    local = extract(photos, tmp_path / "local", cache_dir)
    remote = extract(photos, tmp_path / "ray", cache_dir, RayCluster(actors=2))
    assert remote.computed == local.computed == 20
    assert remote.kept == local.kept == list(range(20))
    assert remote.skipped == local.skipped
    assert [path.name for path, _ in remote.skipped] == ["corrupt.jpg", "missing.jpg"]
    assert "No such file" in remote.skipped[1][1]
    assert remote.digests == local.digests
    difference = np.abs(remote.features - local.features).max()
    print(f"max abs difference, Ray vs local features: {difference}")
    assert difference == 0.0
    again = extract(photos, tmp_path / "ray", cache_dir, RayCluster())
    assert (again.computed, again.from_cache) == (0, 20)


def crashing_worker(marker: Path) -> type:
    class CrashingWorker(BackboneWorker):
        """Dies once, the first time any copy of it gets a batch."""

        def __call__(self, batch):
            if not marker.exists():
                marker.touch()
                os._exit(1)
            return super().__call__(batch)

    return CrashingWorker


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_replaced_and_the_run_finishes(
    cluster, photos, cache_dir, tmp_path
):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = tmp_path / "crashed"
    worker = crashing_worker(marker)
    remote = extract(photos, tmp_path / "ray", cache_dir, RayCluster(worker=worker))
    assert marker.exists()  # a worker did die
    local = extract(photos, tmp_path / "local", cache_dir)
    assert remote.kept == local.kept and remote.skipped == local.skipped
    assert np.array_equal(remote.features, local.features)


@pytest.mark.slow
def test_training_on_ray_gives_the_same_model_as_on_one_machine(photos, cache_dir, tmp_path):
    data = tmp_path / "data"
    for label in ("daisy", "sunflower"):
        copy_photos(real_photos(label, 14, skip=20), data / label)
    (data / "daisy" / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    args = ["--json", "--cache-dir", str(cache_dir)]
    local = headstart("train", str(data), "-o", str(tmp_path / "local"), *args)
    store = tmp_path / "store"
    on_ray = ["--ray", "local", "--feature-store", str(store)]
    remote = headstart("train", str(data), "-o", str(tmp_path / "ray"), *on_ray, *args)
    assert local.returncode == 0, local.stderr
    assert remote.returncode == 0, remote.stderr
    local_summary, remote_summary = json.loads(local.stdout), json.loads(remote.stdout)
    for key in ("used", "skipped", "train_per_class", "val_accuracy"):
        assert remote_summary[key] == local_summary[key], key
    assert remote_summary["skipped"][0][0].endswith("corrupt.jpg")
    assert remote_summary["computed"] == 28  # a fresh store: every readable image
    assert "the 28 features the cache lacked were computed on Ray" in remote_summary["notes"]
    models = [next((tmp_path / m).glob("model-*.safetensors")) for m in ("local", "ray")]
    weights = [load_file(model) for model in models]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert np.array_equal(weights[0][name], weights[1][name]), name
    again = headstart("train", str(data), "-o", str(tmp_path / "again"), *on_ray, *args)
    assert json.loads(again.stdout)["computed"] == 0  # all from the shared store


@pytest.mark.slow
def test_batch_prediction_on_ray_equals_predict(cluster, trained, photos, cache_dir, tmp_path):
    from headstart import Classifier
    from headstart.model.batch import predict_to_file

    classifier, folder = trained
    expected = [p.record() for p in classifier.predict_files(photos, 2)]
    context = on_ray(context=RunContext(cache_dir=cache_dir, feature_store=str(tmp_path / "s")))
    on_cluster = Classifier.load(folder, context)
    manifest = photos[0].parent / "manifest.csv"  # relative paths, a missing file among them
    manifest.write_text("path\n" + "".join(f"{p.name}\n" for p in photos), encoding="utf-8")
    output = tmp_path / "predictions.parquet"
    done = predict_to_file(on_cluster, manifest, output, 2, part_size=8)
    assert (done.images, done.unreadable, done.parts, done.parts_reused) == (22, 2, 3, 0)
    import pyarrow.parquet as pq

    rows = pq.read_table(output).to_pylist()
    assert [r["path"] for r in rows] == [r["path"] for r in expected]
    assert [r["labels"] for r in rows] == [r["labels"] for r in expected]
    assert [r["error"] for r in rows] == [r["error"] for r in expected]
    from_ray = tmp_path / "from_ray.parquet"  # a Ray Dataset of paths in, the same rows out
    predict_to_file(
        on_cluster, ray.data.from_items([{"path": str(p)} for p in photos]), from_ray, 2
    )
    again = pq.read_table(from_ray).to_pylist()  # in the order Ray gave the paths
    assert sorted((r["path"], r["labels"], r["error"] or "") for r in again) == sorted(
        (r["path"], r["labels"], r["error"] or "") for r in rows
    )
    got = np.array([r["probabilities"] for r in rows if not r["error"]])
    want = np.array([r["probabilities"] for r in expected if not r["error"]])
    assert np.allclose(got, want, atol=1e-6)


@pytest.mark.slow
def test_ray_actors_read_images_from_an_object_store(
    cluster, trained, object_store, cache_dir, tmp_path, monkeypatch
):
    import pyarrow.parquet as pq

    from headstart import Classifier
    from headstart.model.batch import predict_to_file

    classifier, folder = trained
    files = sorted(object_store.folder.rglob("*.jpg"))[::3]
    keys = [f.relative_to(object_store.folder).as_posix() for f in files] + ["sunflower/gone.jpg"]
    manifest = tmp_path / "manifest.csv"  # the actors get the endpoint from the URI itself
    monkeypatch.setenv("HEADSTART_URI_OPTIONS", "allow")
    uris = [object_store.uri(k, in_query=True) for k in keys]
    manifest.write_text("path\n" + "\n".join(uris) + "\n", encoding="utf-8")
    context = on_ray(context=RunContext(cache_dir=cache_dir, feature_store=str(tmp_path / "s")))
    output = tmp_path / "predictions.parquet"
    done = predict_to_file(Classifier.load(folder, context), manifest, output, 2)
    assert (done.images, done.unreadable) == (len(uris), 1)
    rows = pq.read_table(output).to_pylist()
    expected = [p.record() for p in classifier.predict_files(files, 2)]
    assert [r["path"] for r in rows] == uris
    assert [r["labels"] for r in rows[:-1]] == [r["labels"] for r in expected]
    got = np.array([r["probabilities"] for r in rows[:-1]])
    assert np.allclose(got, [r["probabilities"] for r in expected], atol=1e-6)
    assert rows[-1]["error"].startswith("unreadable:") and not rows[-1]["labels"]


def test_ray_missing_is_one_clear_line(monkeypatch):
    from headstart.cluster.session import connect

    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(HeadstartError, match=r"pip install 'headstart\[ray\]'"):
        connect("local")


def test_an_unreachable_cluster_is_one_clear_line(tmp_path, cache_dir):
    data = tmp_path / "data"
    for label in ("daisy", "sunflower"):
        copy_photos(real_photos(label, 3), data / label)
    away = ["--ray", "127.0.0.1:1", "--feature-store", str(tmp_path / "empty")]
    result = headstart("train", str(data), "-o", str(tmp_path / "m"), *away, cache_dir=cache_dir)
    assert result.returncode == 1
    assert "cannot join the Ray cluster at 127.0.0.1:1" in result.stderr
    assert "Traceback" not in result.stderr


FINETUNE = FitSettings(strategy="finetune", finetune_epochs=2, unfreeze="2", augment="none")
NO_VAL = {"val_percent": 0, "test_percent": 0}  # every epoch kept: nothing to judge them on


def tuned_weights(classifier) -> dict[str, np.ndarray]:
    return {name: np.asarray(t) for name, t in classifier.backbone_tensors.items()}


@pytest.mark.slow
def test_fine_tuning_on_one_ray_worker_gives_the_local_weights(
    cluster, presplit, cache_dir, tmp_path
):
    data = tmp_path / "data"  # training photos alone: with no validation every epoch is kept
    shutil.copytree(presplit / "train", data / "train")
    local = train(data, settings=FINETUNE, context=RunContext(cache_dir=cache_dir), **NO_VAL)
    context = on_ray(context=RunContext(cache_dir=cache_dir), train_workers=1)
    remote = train(data, tmp_path / "m", settings=FINETUNE, context=context, **NO_VAL)
    assert remote.finetune.workers == 1
    assert "fine-tuned on 1 Ray Train worker(s)" in remote.summary.notes
    assert [h["train_loss"] for h in remote.history] == pytest.approx(
        [h["train_loss"] for h in local.history], rel=1e-5
    )
    mine, theirs = tuned_weights(remote), tuned_weights(local)
    assert mine.keys() == theirs.keys() and mine
    difference = max(float(np.abs(mine[k] - theirs[k]).max()) for k in mine)
    print(f"max abs weight difference, 1 Ray worker vs local: {difference:.2e}")
    assert difference < 1e-5
    # The unknown-image score too: fitted on the tuned features, computed on Ray.
    assert remote.unknown is not None and local.unknown is not None
    np.testing.assert_allclose(remote.unknown.bank, local.unknown.bank, atol=2e-3)
    assert not (tmp_path / "m" / CHECKPOINT_FILE).exists()  # the run finished


@pytest.mark.slow
def test_fine_tuning_on_two_ray_workers_learns_as_well(cluster, presplit, cache_dir, tmp_path):
    context = on_ray(context=RunContext(cache_dir=cache_dir), train_workers=2)
    remote = train(presplit, tmp_path / "m", settings=FINETUNE, context=context)
    local = train(presplit, settings=FINETUNE, context=RunContext(cache_dir=cache_dir))
    assert remote.finetune.workers == 2
    assert len(remote.history) == len(local.history) == 2
    accuracy = [m.summary.val_accuracy for m in (remote, local)]
    print(f"validation accuracy, 2 Ray workers vs local: {accuracy}")
    assert abs(accuracy[0] - accuracy[1]) <= 2 / 16  # two of the 16 validation photos


@pytest.mark.slow
def test_each_fine_tuning_worker_reads_its_shard_through_ray_data(cluster, photos):
    from headstart.cluster.training import SHARD, _shard_datasets
    from headstart.data.sources import Sample
    from headstart.features.labelled import LabelledFeatures

    samples = [Sample(path, "daisy", "train") for path in photos]
    n = len(samples)
    train_set = LabelledFeatures(np.zeros((n, 1)), np.zeros(n, np.int64), samples, [], 0)
    datasets = _shard_datasets(ray, train_set, 2)
    assert set(datasets) == {SHARD.format(0), SHARD.format(1)}
    for rank in (0, 1):  # every 2nd image, as torchrun shards them, with its file's bytes
        rows = sorted(datasets[SHARD.format(rank)].take_all(), key=lambda r: r["position"])
        assert [r["position"] for r in rows] == list(range(rank, n, 2))
        for row in rows:
            path = photos[row["position"]]
            if path.exists():
                assert row["data"] == path.read_bytes() and not row["reason"]
            else:  # the file gone since its features were computed: why, not a crash
                assert row["reason"].startswith("unreadable:") and not row["data"]


@pytest.mark.slow
def test_a_failing_worker_is_one_clear_error(cluster, presplit, cache_dir, tmp_path):
    from headstart.features.labelled import labelled_features
    from headstart.model.heads import HeadConfig, build_head

    data = tmp_path / "train"
    shutil.copytree(presplit / "train", data)
    dataset = load_dataset(data, 0, 0)
    backbone = resolve_backbone("efficientnet_lite0", cache_dir).head_only()
    extractor = FeatureExtractor(backbone, FeatureCache(cache_dir))
    samples = labelled_features(extractor, dataset.split("train"), dataset.classes)
    samples.samples[0].path.unlink()  # gone after its features were computed
    head = build_head(HeadConfig("linear", samples.x.shape[1], 2))
    with pytest.raises(HeadstartError, match=r"fine-tuning failed on the Ray workers: .*No such"):
        RayCluster(train_workers=1).finetune(
            backbone=backbone,
            head=head,
            train=samples,
            val=samples.without(set(range(len(samples.y)))),
            settings=FINETUNE,
            model_dir=cache_dir / "onnx",
            context=RunContext(cache_dir=cache_dir),
        )


@pytest.mark.slow
def test_a_run_stopped_here_resumes_on_ray_workers(
    cluster, presplit, cache_dir, tmp_path, monkeypatch
):
    from headstart.training.checkpoint import Checkpoint

    data = tmp_path / "data"
    shutil.copytree(presplit / "train", data / "train")
    local = RunContext(cache_dir=cache_dir)
    uninterrupted = train(data, settings=FINETUNE, context=local, **NO_VAL)
    real_save = Checkpoint.save

    saved = []

    def save_then_stop(self, module, optimizer, scheduler, state):
        real_save(self, module, optimizer, scheduler, state)
        saved.append(dict(state.history[0]))
        raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(data, tmp_path / "m", settings=FINETUNE, context=local, **NO_VAL)
    monkeypatch.undo()
    assert (tmp_path / "m" / CHECKPOINT_FILE).exists()
    context = on_ray(context=local, train_workers=1)
    resumed = train(data, tmp_path / "m", settings=FINETUNE, context=context, resume=True, **NO_VAL)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert resumed.history[0] == saved[0]  # epoch 1 came from the checkpoint, timing too
    mine, theirs = tuned_weights(resumed), tuned_weights(uninterrupted)
    assert max(float(np.abs(mine[k] - theirs[k]).max()) for k in mine) < 1e-5


@pytest.mark.slow
def test_torchrun_runs_the_loop_ray_train_runs(cluster, presplit, cache_dir, tmp_path):
    from safetensors.torch import load_file as load_torch
    from torchrun_finetune import finetune_arguments

    data = tmp_path / "data"
    shutil.copytree(presplit / "train", data / "train")
    output = tmp_path / "torchrun.safetensors"
    script = Path(__file__).parent / "torchrun_finetune.py"
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",
            str(script),
            str(data),
            str(cache_dir),
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert launched.returncode == 0, launched.stderr[-2000:]
    on_ray = RayCluster(train_workers=2).finetune(**finetune_arguments(data, cache_dir))
    torchrun = load_torch(output)
    assert torchrun.keys() == on_ray.tensors.keys() and torchrun
    difference = max(float((torchrun[k] - on_ray.tensors[k]).abs().max()) for k in torchrun)
    print(f"max abs weight difference, torchrun vs Ray Train (2 workers each): {difference:.2e}")
    assert difference < 1e-5


@pytest.mark.slow
def test_a_node_with_other_weights_refuses_to_compute(cluster, photos, cache_dir, tmp_path):
    from dataclasses import replace as replaced

    backbone = resolve_backbone("efficientnet_lite0", cache_dir)
    elsewhere = replaced(backbone, weights_id="sha256:" + "0" * 64)  # as the driver saw them
    extractor = FeatureExtractor(
        elsewhere, ParquetFeatureStore(tmp_path / "s", cache_dir), runner=RayCluster()
    )
    with pytest.raises(HeadstartError) as raised:
        extractor.extract_files(photos[:3])
    message = str(raised.value)
    assert "weights installed on this machine" in message and "Traceback" not in message
    assert ParquetFeatureStore(tmp_path / "s", cache_dir).count() == 0


@pytest.mark.slow
def test_a_ray_run_whose_worker_died_resumes_from_the_run_storage(
    cluster, presplit, cache_dir, tmp_path, monkeypatch
):
    """Epoch checkpoints live in the run's storage path, not in the driver's model folder
    (given here as a relative path, which the workers' own folders would misread)."""
    data = tmp_path / "data"
    shutil.copytree(presplit / "train", data / "train")
    settings = FitSettings(strategy="finetune", finetune_epochs=4, unfreeze="2", augment="none")
    uninterrupted = train(
        data, settings=settings, context=RunContext(cache_dir=cache_dir), **NO_VAL
    )
    storage = tmp_path / "runs"
    context = on_ray(context=RunContext(cache_dir=cache_dir), train_workers=1, storage=storage)
    monkeypatch.chdir(tmp_path)
    killer = threading.Thread(target=kill_the_worker_after_a_checkpoint, args=(storage,))
    killer.start()
    with pytest.raises(HeadstartError, match="fine-tuning failed on the Ray workers"):
        train(data, "m", settings=settings, context=context, **NO_VAL)
    killer.join()
    assert not Path("m", CHECKPOINT_FILE).exists()  # nothing written beside the model
    stored = [saved_history(p) for p in storage.glob("*/checkpoint_*/checkpoint.safetensors")]
    assert stored and all(1 <= len(history) < 4 for history in stored)
    resumed = train(data, "m", settings=settings, context=context, resume=True, **NO_VAL)
    history = resumed.history
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    # epochs from a stored checkpoint, timings too (Ray resumes from the last it registered)
    assert any(history[: len(saved)] == saved for saved in stored)
    mine, theirs = tuned_weights(resumed), tuned_weights(uninterrupted)
    assert max(float(np.abs(mine[k] - theirs[k]).max()) for k in mine) < 1e-5
    assert not list(storage.iterdir())  # a finished run leaves nothing to resume


def saved_history(path: Path) -> list[dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as file:
        return json.loads(file.metadata()["state"])["loop"]["history"]


def kill_the_worker_after_a_checkpoint(storage: Path) -> None:
    """SIGKILL the Ray Train worker once Ray has registered an epoch checkpoint."""
    for _ in range(1200):
        snapshots = storage.glob("*/checkpoint_manager_snapshot.json")
        if any(re.search(r'"checkpoint_\d{4}-', path.read_text()) for path in snapshots):
            found = subprocess.run(["pgrep", "-f", "RayTrainWorker"], capture_output=True)
            for pid in found.stdout.split():
                os.kill(int(pid), signal.SIGKILL)
            return
        time.sleep(0.05)
