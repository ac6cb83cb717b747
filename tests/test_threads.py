"""Threads sized to the cores really available, and runtimes that sleep instead of spinning."""

import json
import os
import subprocess
import sys

import pytest

from headstart import threads


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),  # cgroup v2
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "50000", "cpu/cpu.cfs_period_us": "100000"}, 0.5),  # v1
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
        ({"cpu.max": "garbage"}, None),
        ({}, None),
    ],
)
def test_a_cgroup_quota_is_read_from_its_files(tmp_path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert threads._cgroup_cpu_quota(tmp_path) == quota


def test_a_cgroup_quota_caps_the_threads(monkeypatch, tmp_path):
    cores = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("50000 100000")
    reads = threads._cgroup_cpu_quota
    monkeypatch.setattr(threads, "_cgroup_cpu_quota", lambda: reads(tmp_path))
    assert threads.cpu_threads() == 1  # half a core is still one thread
    (tmp_path / "cpu.max").write_text("max 100000")
    assert threads.cpu_threads() == cores


def test_onnx_runtime_never_spin_waits(monkeypatch, tmp_path):
    """The sessions that feature extraction and the ONNX runtime open are the no-spin ones."""
    import onnxruntime as ort

    from headstart.features.engines import OnnxEngine

    opened = []
    real = ort.InferenceSession

    def recording(path, sess_options=None, **kwargs):
        opened.append(sess_options)
        return real(path, sess_options=sess_options, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", recording)
    OnnxEngine(tiny_onnx(tmp_path), threads=2)
    assert len(opened) == 1 and opened[0].intra_op_num_threads == 2
    for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
        assert opened[0].get_session_config_entry(key) == "0"


def tiny_onnx(folder) -> str:
    """A one-node ONNX model (Identity), enough to open a session on."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["pixels"], ["features"])],
        "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1])],
    )
    path = str(folder / "tiny.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_openmp_waits_passively_unless_the_user_chose():
    script = "import os, headstart; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert run.stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert run.stdout.strip() == "ACTIVE"


BLAS_SCRIPT = """
import json
from pathlib import Path
import scipy.optimize  # loads SciPy's BLAS
from threadpoolctl import ThreadpoolController, threadpool_limits
from headstart.training.solver import scipy_blas_single_threaded

def scipy_threads():
    controllers = ThreadpoolController().lib_controllers
    return [c.num_threads for c in controllers if "scipy" in Path(c.filepath).parent.name]

with threadpool_limits(2, user_api="blas"):
    before = scipy_threads()
    with scipy_blas_single_threaded():
        inside = scipy_threads()
    after = scipy_threads()
    # two users overlapping, as two threads would: the first out leaves the second's setting
    first, second = scipy_blas_single_threaded(), scipy_blas_single_threaded()
    first.__enter__(), second.__enter__(), first.__exit__(None, None, None)
    overlap = scipy_threads()
    second.__exit__(None, None, None)
    print(json.dumps([before, inside, after, overlap, scipy_threads()]))
"""


def test_the_linear_solver_puts_scipys_blas_on_one_thread():
    # BLAS thread counts are the process's: measured in a fresh one, where no other test's
    # libraries or settings are loaded
    run = subprocess.run([sys.executable, "-c", BLAS_SCRIPT], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    before, inside, after, overlap, last_out = json.loads(run.stdout)
    assert before and set(before) == {2}, "SciPy's BLAS was not found"
    assert inside == [1] * len(before) and after == before
    assert overlap == inside and last_out == before


def test_a_rerun_asked_for_while_running_runs_once_more_after():
    import threading

    from headstart.threads import Rerun

    started, release, runs = threading.Event(), threading.Event(), []

    def work() -> None:
        runs.append(len(runs))
        started.set()
        release.wait(10)

    rerun = Rerun(work)
    rerun.request()
    assert started.wait(10) and rerun.busy
    for _ in range(3):  # three requests while it runs: one more run, not three
        rerun.request()
    assert not rerun.wait(0.05)  # still running
    release.set()
    assert rerun.wait(10) and not rerun.busy
    assert runs == [0, 1]
