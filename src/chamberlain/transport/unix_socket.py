"""The Unix socket listener: a socket only its owner can reach, and a check of who connected.

Two layers, each enough alone. The filesystem: the socket is 0600 in a 0700 directory owned by the serving user,
so connect(2) by anyone else fails with EACCES (unix(7): connecting needs write permission on the socket and search
permission on the directories). The kernel's record of the peer: SO_PEERCRED (socket(7)) gives the uid and gid the
connecting process had at connect(2), which it cannot forge, checked against the allowed lists before a byte is read.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# unix(7): sockaddr_un.sun_path holds 108 bytes on Linux, the terminating NUL included.
SUN_PATH_MAX = 107
# socket(7): SO_PEERCRED returns struct ucred { pid_t pid; uid_t uid; gid_t gid; }, pid signed, ids unsigned.
_UCRED = struct.Struct("=iII")
# How long a probe of an existing socket waits for a busy server to accept before calling it alive.
_PROBE_TIMEOUT = 2.0


class UnixSocketError(Exception):
    """Why the socket was not created, in one line that names the path."""


@dataclass(frozen=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int


@dataclass(frozen=True)
class PeerPolicy:
    """Who may connect: a peer whose uid is listed, or whose gid is (its effective gid at connect(2); supplementary
    groups are not reported by SO_PEERCRED, so they cannot count)."""

    uids: frozenset[int]
    gids: frozenset[int] = frozenset()

    def admits(self, peer: PeerCredentials) -> bool:
        return peer.uid in self.uids or peer.gid in self.gids


class SocketOptions(Protocol):
    """A connected socket as the event loop lends it: asyncio's TransportSocket, uvloop's, or a socket.socket."""

    def getsockopt(self, level: int, option: int, buflen: int, /) -> bytes: ...


def peer_credentials(sock: SocketOptions) -> PeerCredentials:
    """The connecting process's pid, uid and gid as the kernel recorded them at connect(2); reads no data."""
    pid, uid, gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    return PeerCredentials(pid, uid, gid)


@dataclass
class UnixListener:
    """A listening socket and the file it created; close() leaves no socket file of ours behind."""

    path: Path
    socket: socket.socket
    created: os.stat_result

    def close(self) -> None:
        """Another server may have replaced the file meanwhile: only the inode created here is unlinked."""
        self.socket.close()
        with contextlib.suppress(FileNotFoundError):
            current = self.path.lstat()
            if (current.st_dev, current.st_ino) == (self.created.st_dev, self.created.st_ino):
                self.path.unlink()


@contextlib.contextmanager
def unix_listener(path: Path) -> Iterator[UnixListener]:
    """A listening socket at `path` (see bind_unix_socket), closed and removed on exit."""
    sock = bind_unix_socket(path)
    listener = UnixListener(path, sock, path.lstat())
    try:
        yield listener
    finally:
        listener.close()


def bind_unix_socket(path: Path) -> socket.socket:
    """Binds and listens at `path` after checking its directory and clearing a stale socket; the file is 0600 from
    the moment it exists."""
    if not hasattr(socket, "SO_PEERCRED"):
        raise UnixSocketError("this platform cannot report a Unix socket peer's uid (no SO_PEERCRED)")
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        raise UnixSocketError(f"the socket path {path} is longer than {SUN_PATH_MAX} bytes (unix(7))")
    try:
        prepare_directory(path.parent)
        clear_stale_socket(path)
    except OSError as problem:  # e.g. EACCES on a directory we own but may not search
        raise UnixSocketError(f"cannot use {path}: {problem.strerror or problem}") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # bind(2) creates the file with mode 0777 & ~umask: 0177 makes it 0600 with no wider moment to chmod away.
        with _umask(0o177):
            sock.bind(os.fspath(path))
        # Listening at once: a socket bound but not listening refuses connections, and would look stale to another
        # instance starting now.
        sock.listen()
    except OSError as problem:
        sock.close()
        raise UnixSocketError(f"cannot listen on {path}: {problem.strerror or problem}") from None
    return sock


def prepare_directory(directory: Path) -> None:
    """Creates the directory 0700 when missing; an existing one must be ours and closed to group and others, since
    whoever may write there could swap the socket, and whoever may search it could connect."""
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        pass
    except OSError as problem:
        raise UnixSocketError(f"cannot create the socket directory {directory}: {problem.strerror}") from None
    status = directory.stat()
    if not stat.S_ISDIR(status.st_mode):
        raise UnixSocketError(f"the socket directory {directory} is not a directory")
    if status.st_uid != os.geteuid():
        raise UnixSocketError(
            f"the socket directory {directory} belongs to uid {status.st_uid}, not to this user (uid {os.geteuid()})"
        )
    if status.st_mode & 0o077:
        raise UnixSocketError(
            f"the socket directory {directory} is open to group or others (mode {stat.S_IMODE(status.st_mode):04o});"
            " chmod 700 it or choose another"
        )


def clear_stale_socket(path: Path) -> None:
    """Removes a socket nobody listens on (a crashed server's leftover); refuses a live one, and anything at `path`
    that is not a socket is never touched."""
    try:
        status = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(status.st_mode):
        raise UnixSocketError(f"{path} exists and is not a socket; it was left as it is")
    if _is_listening(path):
        raise UnixSocketError(f"another server is already listening on {path}")
    path.unlink()


def _is_listening(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(_PROBE_TIMEOUT)
        try:
            probe.connect(os.fspath(path))
        except ConnectionRefusedError:  # unix(7): ECONNREFUSED, no socket is listening at that address
            return False
        except TimeoutError:  # a full backlog: someone is listening, just busy
            return True
        except OSError as problem:
            raise UnixSocketError(f"cannot tell whether {path} is in use: {problem.strerror}") from None
        return True


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    # The umask is per process: other threads creating files meanwhile get modes narrower, never wider.
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)
