"""Joining a Ray cluster, or starting one on this machine, with a clear message when Ray is
not installed or the cluster cannot be reached."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import traceback
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from headstart import console
from headstart.errors import HeadstartError

LOCAL = "local"
# Where Ray's own output goes once `keep_ray_output_off_the_terminal` ran (the CLI), else None.
output_log: Path | None = None
# Ray's native code may end the process at once (its raylet died): a watcher process then
# says so on the terminal, unless `release_the_terminal` said the command ended by itself.
_WATCHER = """
import sys
if sys.stdin.read() != "done":
    print("error: Ray ended this run abruptly (did its raylet die?); Ray's own output: "
          + sys.argv[1], file=sys.stderr)
"""
_watcher: Any = None
_wanted_log: Path | None = None


def ray_module() -> Any:
    try:
        import ray
    except ImportError as error:
        raise HeadstartError(
            "--ray needs Ray, an optional extra: pip install 'headstart[ray]'"
        ) from error
    return ray


def connect(address: str | None = None) -> Any:
    """The ray module, connected: to `address`, else to $RAY_ADDRESS, else to a new cluster
    on this machine ('local' always starts one here). Reuses a connection already made."""
    ray = ray_module()
    if not ray.is_initialized():
        if _wanted_log is not None and output_log is None:
            _redirect(ray, _wanted_log)
        _join(ray, address)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # headstart shows its own
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # a line per dataset run otherwise
    return ray


def keep_ray_output_off_the_terminal(log: Path) -> None:
    """Once Ray is joined, send what it writes (its native logs, its Python loggers, its
    processes' relayed lines, the raylet's last 20 log lines when it dies) to `log`, so that
    the terminal shows headstart's lines alone. For a command-line process: file descriptor 2
    then leads to `log`, and headstart's console to where it led before."""
    global _wanted_log
    _wanted_log = log


def _redirect(ray: Any, log: Path) -> None:
    global output_log, _watcher
    log.parent.mkdir(parents=True, exist_ok=True)
    sink = open(log, "w", encoding="utf-8", errors="backslashreplace", buffering=1)  # noqa: SIM115
    sys.stderr.flush()
    terminal = os.fdopen(os.dup(2), "w", encoding=sys.stderr.encoding, errors="backslashreplace")
    terminal.reconfigure(line_buffering=True)
    os.dup2(sink.fileno(), 2)
    console.stderr.file = terminal
    sys.excepthook = partial(_print_exception, terminal)  # a bug's traceback stays in view
    _watcher = subprocess.Popen(
        [sys.executable, "-c", _WATCHER, str(log)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=terminal,
        text=True,
    )
    # Ray prints what it relays from its processes through this, to sys.stdout or sys.stderr.
    ray._private.worker.print_to_stdstream = lambda data, ignore_prefix: print(
        *data.get("lines", []), sep="\n", file=sink
    )
    output_log = log


def release_the_terminal() -> None:
    """The command is ending by itself and has said so: the watcher stays silent."""
    global _watcher
    if _watcher is not None:
        _watcher.communicate("done")
        _watcher = None


def _join(ray: Any, address: str | None) -> None:
    if address is None:
        address = os.environ.get("RAY_ADDRESS") or LOCAL
    _check_reachable(address)
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    except Exception as error:  # Ray raises plain Exception too (a raylet that never starts)
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        if output_log is not None and "InvalidAuthToken" in _text(output_log):
            first = "the cluster refused this process's authentication token ($RAY_AUTH_TOKEN)"
        raise HeadstartError(f"cannot join the Ray cluster at {address}: {first}") from error


def _print_exception(stream: TextIO, kind: type, value: BaseException, trace: Any) -> None:
    release_the_terminal()
    traceback.print_exception(kind, value, trace, file=stream)


def output_note() -> str:
    """' (Ray's own output: LOG)' for an error line, when Ray wrote there; else ''."""
    written = output_log is not None and output_log.is_file() and output_log.stat().st_size > 0
    return f" (Ray's own output: {output_log})" if written else ""


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Ray waits minutes on an address nothing answers at; a TCP connection says in seconds."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # 'local', 'auto': Ray resolves those itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as error:
        raise HeadstartError(
            f"cannot join the Ray cluster at {address}: nothing answers there "
            f"({error.strerror or error}); check the address, or use --ray local"
        ) from error


def error_line(error: BaseException) -> str:
    """What a Ray task, actor or worker raised, in one line, without the traceback Ray wraps
    around it: its last `SomeError: message` line (a HeadstartError's message alone)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    raised = [line for line in lines if re.match(r"^[\w.]+(Error|Exception): ", line)]
    if not raised:
        return lines[0] if lines else type(error).__name__
    kind, message = raised[-1].split(": ", 1)
    return message if kind.endswith("HeadstartError") else raised[-1]
