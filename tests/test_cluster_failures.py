"""When a Ray cluster fails (a wrong token, a dead raylet), the terminal shows headstart's one
line, and Ray's own output is kept in a log the line names."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import copy_photos, real_photos

pytestmark = pytest.mark.slow  # a cluster's start, and Ray's own retries: 20-40 s each


def run_headstart(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "headstart.cli", *args]
    environment = {**os.environ, "COLUMNS": "300", **(env or {})}
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    )


def only_headstart_lines(stderr: str) -> list[str]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) <= 4, stderr[:3000]
    for line in lines:
        assert line.startswith(("Features", "error:")), line
    assert lines[-1].startswith("error:")
    return lines


@pytest.fixture
def flowers(tmp_path) -> Path:
    for label in ("daisy", "sunflower"):
        copy_photos(real_photos(label, 12), tmp_path / "data" / label)
    return tmp_path / "data"


def wait_for_port(port: int, seconds: float = 60) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port}")


def test_a_refused_token_is_one_line(flowers, tmp_path):
    """Before: 20 lines of Ray's 'Failed to get cluster ID' warnings, then a line naming no
    cause."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0123456789abcdef0123456789abcdef"}
    ray_command = str(Path(sys.executable).with_name("ray"))
    # Its own temp folder (short: Ray's socket paths must fit 107 bytes), so that the file
    # naming the current cluster never leads another test's ray.init() here.
    temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    options = ["--block", f"--port={port}", "--num-cpus=1", "--include-dashboard=false"]
    options.append(f"--temp-dir={temp}")
    head = subprocess.Popen(
        [ray_command, "start", "--head", *options, "--node-ip-address=127.0.0.1"],
        env={**os.environ, **token},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        wrong = {**token, "RAY_AUTH_TOKEN": "f" * 32}
        args = ["train", str(flowers), "-o", str(tmp_path / "m"), "--ray", f"127.0.0.1:{port}"]
        run = run_headstart(*args, "--cache-dir", str(tmp_path / "cache"), env=wrong)
        _, stderr = run.communicate(timeout=300)
    finally:
        head.send_signal(signal.SIGTERM)  # `ray start --block` then stops what it started
        head.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)
    assert run.returncode == 1
    error = only_headstart_lines(stderr)[-1]
    assert "refused this process's authentication token ($RAY_AUTH_TOKEN)" in error
    log = tmp_path / "cache" / "ray-output.log"
    assert f"Ray's own output: {log}" in error and "InvalidAuthToken" in log.read_text()


def descendants(pid: int) -> dict[int, str]:
    """{pid: command line} of every process under `pid`."""
    children: dict[int, list[int]] = {}
    commands: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found[child] = commands[child].decode(errors="replace")
            todo.append(child)
    return found


def test_a_raylet_killed_mid_run_is_one_line(flowers, tmp_path):
    """Before: 20-70 lines of Ray's logs (a traceback, the raylet's last log lines) before
    headstart's line."""
    args = ["train", str(flowers), "-o", str(tmp_path / "m"), "--ray", "local"]
    run = run_headstart(*args, "--cache-dir", str(tmp_path / "cache"))
    deadline = time.monotonic() + 120
    raylet = None
    while time.monotonic() < deadline and run.poll() is None:
        processes = descendants(run.pid)
        raylets = [pid for pid, command in processes.items() if "/raylet" in command]
        if raylets and any("ray::MapWorker" in command for command in processes.values()):
            raylet = raylets[0]  # the backbone's actors are at work on the features
            break
        time.sleep(0.05)
    assert raylet is not None, "the run never reached its Ray workers"
    os.kill(raylet, signal.SIGKILL)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 1
    error = only_headstart_lines(stderr)[-1]
    # Ray's native code may end the process before headstart's line: the watcher's line then
    assert "on Ray failed" in error or "Ray ended this run abruptly" in error
    assert "Ray's own output" in error


@pytest.mark.parametrize("ending", ["os._exit(1)", "raise SystemExit(1)", "1 / 0"])
def test_a_process_ended_by_ray_still_says_so(tmp_path, ending):
    """Ray's native code can end the driver at once (no Python error handling runs): a
    watcher then says so on the terminal; a command that ends by itself is not doubled."""
    log = tmp_path / "ray-output.log"
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from headstart.cluster.session import connect, keep_ray_output_off_the_terminal\n"
        "from headstart.errors import HeadstartError\n"
        f"keep_ray_output_off_the_terminal(Path({str(log)!r}))\n"
        "try:\n"
        "    connect('127.0.0.1:1')  # nothing answers: refused at once, after the redirect\n"
        "except HeadstartError:\n"
        "    pass\n"
        "os.write(2, b'native noise\\n')\n"
        f"{ending}\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 1 and "native noise" in log.read_text()
    assert "native noise" not in run.stderr
    abrupt = "Ray ended this run abruptly" in run.stderr
    assert abrupt == (ending != "1 / 0"), run.stderr  # a traceback is its own message
    assert ("ZeroDivisionError" in run.stderr) == (ending == "1 / 0")
