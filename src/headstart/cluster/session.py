"""Joining a Ray cluster, or starting one on this machine, with a clear message when Ray is
not installed or the cluster cannot be reached."""

from __future__ import annotations

import logging
import os
import re
import socket
from typing import Any

from headstart.errors import HeadstartError

LOCAL = "local"


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
        _join(ray, address)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # headstart shows its own
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # a line per dataset run otherwise
    return ray


def _join(ray: Any, address: str | None) -> None:
    if address is None:
        address = os.environ.get("RAY_ADDRESS") or LOCAL
    _check_reachable(address)
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise HeadstartError(f"cannot join the Ray cluster at {address}: {first}") from error


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
