"""Running the test upstream (tests/support/upstream_server.py): as a stdio command, or over HTTP on loopback."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from chamberlain.gateway.server_config import ServerConfig
from tests.support.server import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests.support.upstream_server"
START_TIMEOUT = 20.0


def stdio_command(*extra: str) -> list[str]:
    """The command line of the stdio upstream."""
    return [sys.executable, "-m", MODULE, "--stdio", *extra]


def stdio_server_config(*extra: str, **settings: Any) -> ServerConfig:
    """A ServerConfig running the stdio upstream; the gateway gives processes a minimal environment, so the
    repository goes in through PYTHONPATH."""
    return ServerConfig(command=tuple(stdio_command(*extra)), env={"PYTHONPATH": str(REPO_ROOT)}, **settings)


class HttpUpstreamProcess:
    """The HTTP upstream as a subprocess on a fixed loopback port, which can be killed and started again.

    Synchronous on purpose: module-scoped fixtures start it outside any event loop, and tests that restart it
    can afford to block for the second it takes."""

    def __init__(self, *args: str, module: str = MODULE) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self._args = args
        self._module = module
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        command = [sys.executable, "-m", self._module, "--http", "--port", str(self.port), *self._args]
        self._process = subprocess.Popen(command, cwd=REPO_ROOT, env=env)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"the HTTP upstream exited with {self._process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the HTTP upstream did not start listening") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: the upstream dies the way a crashed server does."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def restart(self) -> None:
        self.kill()
        self.start()


@contextlib.contextmanager
def http_upstream(*args: str) -> Iterator[HttpUpstreamProcess]:
    """The HTTP upstream, answering on loopback; `args` are upstream_server flags (--stateless, --garbage, ...)."""
    upstream = HttpUpstreamProcess(*args)
    upstream.start()
    try:
        yield upstream
    finally:
        upstream.kill()
