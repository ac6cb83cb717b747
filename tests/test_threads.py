"""Threads sized to the cores really available, and runtimes that sleep instead of spinning."""

import os
import subprocess
import sys
from pathlib import Path

from headstart import threads


def test_a_cgroup_quota_caps_the_threads(monkeypatch):
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(threads, "_cgroup_cpu_quota", lambda: 0.5)
    assert threads.cpu_threads() == 1
    monkeypatch.setattr(threads, "_cgroup_cpu_quota", lambda: None)
    assert threads.cpu_threads() == cores


def test_onnx_runtime_never_spin_waits():
    options = threads.onnx_session_options(2)
    assert options.intra_op_num_threads == 2
    for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
        assert options.get_session_config_entry(key) == "0"


def test_openmp_waits_passively_unless_the_user_chose():
    script = "import os, headstart; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert run.stdout.strip() == "PASSIVE"
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert run.stdout.strip() == "ACTIVE"


def test_the_linear_solver_puts_scipys_blas_on_one_thread():
    from threadpoolctl import ThreadpoolController

    from headstart.training.solver import scipy_blas_single_threaded

    def scipy_threads():
        controllers = ThreadpoolController().lib_controllers
        return [c.num_threads for c in controllers if "scipy" in Path(c.filepath).parent.name]

    import scipy.optimize  # noqa: F401  (loads SciPy's BLAS)

    before = scipy_threads()
    with scipy_blas_single_threaded():
        assert set(scipy_threads()) <= {1}
    assert scipy_threads() == before
