"""The Unix socket's peer check: who is admitted, and what the gate in front of uvicorn does with everyone else."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
from pathlib import Path
from typing import Any, ClassVar

import pytest
import uvicorn
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from chamberlain.settings import SettingsError, load_settings
from chamberlain.transport.peer_gate import PeerCheckedConfig, PeerGate
from chamberlain.transport.settings import UnixSocketSettings
from chamberlain.transport.unix_socket import PeerCredentials, PeerPolicy, peer_credentials

ALICE, BOB, DEVELOPERS, STAFF = 1000, 1001, 2000, 2001


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    raise AssertionError("the gate tests never run the app")


class Credentials:
    """A socket whose SO_PEERCRED says what the test wants, or fails as the kernel can."""

    def __init__(self, pid: int, uid: int, gid: int, error: OSError | None = None) -> None:
        self.ucred = struct.pack("=iII", pid, uid, gid)
        self.error = error

    def getsockopt(self, level: int, option: int, buflen: int, /) -> bytes:
        assert (level, option, buflen) == (socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        if self.error is not None:
            raise self.error
        return self.ucred


class Transport(asyncio.BaseTransport):
    def __init__(self, sock: object) -> None:
        super().__init__(extra={"socket": sock})
        self.closed = False
        self.protocol: asyncio.BaseProtocol | None = None

    def close(self) -> None:
        self.closed = True

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol


class Uvicorns(asyncio.Protocol):
    """Stands for uvicorn's HTTP protocol: records how it was built and whether it got the connection."""

    built: ClassVar[list[Uvicorns]] = []

    def __init__(self, **arguments: Any) -> None:
        self.arguments = arguments
        self.transport: asyncio.BaseTransport | None = None
        Uvicorns.built.append(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport


@pytest.fixture
def gate() -> PeerGate:
    Uvicorns.built.clear()
    config = PeerCheckedConfig(app, peer_policy=PeerPolicy(uids=frozenset({ALICE}), gids=frozenset({DEVELOPERS})))
    config.admitted_protocol = Uvicorns
    return PeerGate(config, server_state="state", app_state={}, _loop=None)


def test_a_listed_uid_or_gid_is_admitted_and_nobody_else() -> None:
    policy = PeerPolicy(uids=frozenset({ALICE}), gids=frozenset({DEVELOPERS}))
    assert policy.admits(PeerCredentials(pid=1, uid=ALICE, gid=STAFF))
    assert policy.admits(PeerCredentials(pid=1, uid=BOB, gid=DEVELOPERS))
    assert not policy.admits(PeerCredentials(pid=1, uid=BOB, gid=STAFF))
    # root is no exception: unix(7) lets it connect through any file mode, and the list is the only other gate.
    assert not policy.admits(PeerCredentials(pid=1, uid=0, gid=0))


def test_peer_credentials_are_the_connecting_process() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        assert peer_credentials(left) == PeerCredentials(os.getpid(), os.geteuid(), os.getegid())


def test_a_refused_peer_is_closed_and_never_reaches_uvicorn(gate: PeerGate, caplog: pytest.LogCaptureFixture) -> None:
    transport = Transport(Credentials(pid=4242, uid=BOB, gid=STAFF))
    with caplog.at_level(logging.WARNING, logger="chamberlain.transport.peer_gate"):
        gate.connection_made(transport)
    assert transport.closed
    assert transport.protocol is None
    assert Uvicorns.built == []
    assert [record.getMessage() for record in caplog.records] == [
        f"unix socket connection refused: uid {BOB} gid {STAFF} pid 4242 is not allowed"
    ]


def test_an_admitted_peer_is_handed_to_uvicorns_protocol(gate: PeerGate) -> None:
    transport = Transport(Credentials(pid=4242, uid=ALICE, gid=STAFF))
    gate.connection_made(transport)
    [protocol] = Uvicorns.built
    assert not transport.closed
    assert transport.protocol is protocol
    assert protocol.transport is transport
    assert protocol.arguments == {"config": gate._config, "server_state": "state", "app_state": {}, "_loop": None}


@pytest.mark.parametrize("sock", [Credentials(1, ALICE, DEVELOPERS, OSError(errno.EBADF, "bad")), None])
def test_a_peer_the_kernel_cannot_name_is_refused(gate: PeerGate, sock: object) -> None:
    transport = Transport(sock)
    gate.connection_made(transport)
    assert transport.closed
    assert Uvicorns.built == []


def test_the_gate_stands_in_front_of_the_protocol_uvicorn_chose() -> None:
    plain = uvicorn.Config(app)
    plain.load()
    checked = PeerCheckedConfig(app, peer_policy=PeerPolicy(frozenset({ALICE})))
    checked.load()
    assert checked.http_protocol_class is PeerGate
    assert checked.admitted_protocol is plain.http_protocol_class


def test_by_default_only_the_serving_user_may_connect() -> None:
    settings = UnixSocketSettings()
    assert settings.path is None
    assert settings.policy == PeerPolicy(uids=frozenset({os.geteuid()}), gids=frozenset())


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"allowed_uids": [], "allowed_gids": []}, "nobody could connect"),
        ({"allowed_uids": [-1]}, "greater than or equal to 0"),
        ({"allowed_gids": [2**32 - 1]}, "less than 4294967295"),
    ],
)
def test_impossible_lists_are_refused(values: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        UnixSocketSettings.model_validate(values)


def test_the_uds_section_is_read_from_the_file_and_its_mistakes_located(tmp_path: Path) -> None:
    config = tmp_path / "chamberlain.yaml"
    config.write_text("uds:\n  path: /run/chamberlain/gw.sock\n  allowed_uids: [1000]\n  allowed_gids: [2000]\n")
    settings = load_settings(data_dir=tmp_path, environ={})
    assert settings.uds.path == Path("/run/chamberlain/gw.sock")
    assert settings.uds.policy == PeerPolicy(uids=frozenset({1000}), gids=frozenset({2000}))
    config.write_text("demo_server: true\nuds:\n  allowed_uids: []\n")
    with pytest.raises(SettingsError, match=r"chamberlain.yaml:2: setting 'uds': .*nobody could connect"):
        load_settings(data_dir=tmp_path, environ={})
