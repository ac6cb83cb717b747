"""A simulated two-node Ray cluster on this machine computes what one machine computes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import ray
from conftest import copy_photos, real_photos
from ray.cluster_utils import Cluster

from headstart.backbones.registry import resolve_backbone
from headstart.cluster import RayCluster
from headstart.cluster.features import BackboneWorker
from headstart.features.extract import FeatureExtractor
from headstart.features.store import ParquetFeatureStore


@pytest.fixture(scope="module")
def two_nodes():
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def node_recording_worker(folder: Path) -> type:
    class NodeRecordingWorker(BackboneWorker):
        """Notes, in a file per batch, the node that computed it."""

        def __call__(self, batch):
            node = ray.get_runtime_context().get_node_id()
            (folder / f"{batch['position'][0]}-{node}").touch()
            return super().__call__(batch)

    return NodeRecordingWorker


@pytest.mark.slow
def test_two_nodes_compute_the_features_one_machine_does(two_nodes, cache_dir, tmp_path):
    assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    both = real_photos("daisy", 24, skip=12) + real_photos("sunflower", 24, skip=12)
    photos = copy_photos(both, tmp_path)
    (tmp_path / "corrupt.jpg").write_bytes(photos[0].read_bytes()[:500])
    photos.append(tmp_path / "corrupt.jpg")
    backbone = resolve_backbone("efficientnet_lite0", cache_dir)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    notes = tmp_path / "nodes"
    notes.mkdir()
    runner = RayCluster(actors=2, batch_size=4, worker=node_recording_worker(notes))

    def extract(store, runner=None):
        return FeatureExtractor(
            backbone, ParquetFeatureStore(tmp_path / store, cache_dir), runner=runner
        ).extract_files(photos)

    remote, local = extract("ray", runner), extract("local")
    assert remote.kept == local.kept and len(remote.kept) == 48
    assert remote.skipped == local.skipped and remote.skipped[0][0].name == "corrupt.jpg"
    assert np.array_equal(remote.features, local.features)
    nodes = {name.split("-", 1)[1] for name in (p.name for p in notes.iterdir())}
    assert len(nodes) == 2  # both nodes did part of the work
