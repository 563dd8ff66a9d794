"""A real OpenLDAP directory for tests: Debian's `slapd`, on 127.0.0.1 in a temporary folder, with people, groups and
nested groups under dc=example,dc=org (RFC 2606's example domain).

    with running_slapd(tmp_path, tls=True) as directory:
        directory.url                        # "ldap://localhost:PORT" (listening on 127.0.0.1 only)
        directory.ldaps_url                  # "ldaps://localhost:PORT2" (tls=True only; else None)
        directory.ca_file                    # the certificate to trust for StartTLS / LDAPS (tls=True only)
        directory.bind_dn, directory.bind_password      # the service account, allowed to read everything
        directory.user_base, directory.group_base
        directory.provider_config(bind_password="sso/ldap", **more)   # a `kind: ldap` provider mapping for it
        directory.stop(); directory.start()  # the directory goes down, and comes back on the same ports with its data
        directory.referral_port              # ou=partners,ou=people is a referral to ldap://127.0.0.1:referral_port/
        directory.binds_as(dn)               # successful simple binds as `dn` so far (slapd's stats log)
        directory.bind_attempts_as(dn)       # simple binds as `dn` asked for so far, successful or not

Who is in it (`PEOPLE`: uid -> password; sign in with the uid or with `uid@example.org`):
    alice  member of platform; platform is a member of engineering, engineering of everyone (groupOfNames, nested)
    bob    uniqueMember of auditors (groupOfUniqueNames); member of loop-a, which is in loop-b, which is in loop-a
    carol  member of tier-1, in tier-2, ... in tier-12 (deeper than any client should walk); a 3-letter password

Tests needing it skip when slapd is not installed, except under CI=true, where they fail.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.network import make_certificate
from tests.support.server import free_port

IN_CI = os.environ.get("CI", "").lower() == "true"
SLAPD = Path("/usr/sbin/slapd")
SLAPADD = Path("/usr/sbin/slapadd")
MODULES = Path("/usr/lib/ldap")  # Debian builds the back ends and overlays as modules
SCHEMAS = Path("/etc/ldap/schema")
START_TIMEOUT = 15.0

BASE = "dc=example,dc=org"
USER_BASE = f"ou=people,{BASE}"
GROUP_BASE = f"ou=groups,{BASE}"
BIND_DN = f"cn=reader,{BASE}"
BIND_PASSWORD = "reader-secret-7Hq"
PEOPLE = {"alice": "alice-secret-4Kd", "bob": "bob-secret-9Vw", "carol": "c4r"}
TIERS = 12


def user_dn(uid: str) -> str:
    return f"uid={uid},{USER_BASE}"


def group_dn(cn: str) -> str:
    return f"cn={cn},{GROUP_BASE}"


def require_slapd() -> None:
    if SLAPD.is_file() and SLAPADD.is_file():
        return
    if IN_CI:
        pytest.fail("slapd is required in CI but is not installed (apt-get install slapd ldap-utils)")
    pytest.skip("slapd is not installed (apt-get install slapd)")


class Slapd:
    """One slapd server; see the module's documentation. Made by `running_slapd`, which stops it at the end."""

    def __init__(self, work_dir: Path, *, tls: bool) -> None:
        self.work_dir = work_dir
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.referral_port = free_port()  # nothing listens there unless a test does
        self.ca_file = make_certificate(work_dir, "localhost")[0] if tls else None
        self.url = f"ldap://localhost:{self.port}"
        self.ldaps_url = f"ldaps://localhost:{self.tls_port}" if tls else None
        self.bind_dn = BIND_DN
        self.bind_password = BIND_PASSWORD
        self.user_base = USER_BASE
        self.group_base = GROUP_BASE
        self.log = work_dir / "slapd.log"
        self._config = work_dir / "slapd.conf"
        self._process: subprocess.Popen[bytes] | None = None
        (work_dir / "data").mkdir()
        self._config.write_text(_config(work_dir, tls=tls))
        (work_dir / "directory.ldif").write_text(_entries(self.referral_port))
        subprocess.run(
            [str(SLAPADD), "-f", str(self._config), "-l", str(work_dir / "directory.ldif")],
            check=True,
            capture_output=True,
        )

    def provider_config(self, *, bind_password: str = "sso/ldap", **more: Any) -> dict[str, Any]:
        """A `kind: ldap` provider for this directory; `bind_password` is the vault reference to the service
        account's password (store `self.bind_password` there)."""
        return {
            "kind": "ldap",
            "url": self.url,
            "bind_dn": self.bind_dn,
            "bind_password": bind_password,
            "user_base": self.user_base,
            "group_base": self.group_base,
            **more,
        }

    def start(self) -> None:
        assert self._process is None, "slapd is already running"
        listeners = f"ldap://127.0.0.1:{self.port}/"
        if self.tls_port is not None:
            listeners += f" ldaps://127.0.0.1:{self.tls_port}/"
        with self.log.open("ab") as output:
            # -d stats: stay in the foreground (so stopping is ours) and log each connection's operations.
            self._process = subprocess.Popen(
                [str(SLAPD), "-f", str(self._config), "-h", listeners, "-d", "stats"],
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.work_dir,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not _listening(self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"slapd did not start: {self.log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def binds_as(self, dn: str) -> int:
        """Successful simple binds as `dn` so far: slapd logs `BIND dn="..." mech=SIMPLE` only once one succeeded."""
        return self._count(rf'BIND dn="{re.escape(dn)}" mech=SIMPLE')

    def bind_attempts_as(self, dn: str) -> int:
        """Simple binds as `dn` asked for so far, successful or not (`method=128`: simple, RFC 4511 §4.2)."""
        return self._count(rf'BIND dn="{re.escape(dn)}" method=128')

    def _count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log.read_text(errors="replace"), re.IGNORECASE))


@contextlib.contextmanager
def running_slapd(work_dir: Path, *, tls: bool = False) -> Iterator[Slapd]:
    require_slapd()
    work_dir.mkdir(parents=True, exist_ok=True)
    directory = Slapd(work_dir, tls=tls)
    directory.start()
    try:
        yield directory
    finally:
        directory.stop()


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _config(work_dir: Path, *, tls: bool) -> str:
    lines = [
        *(f"include {SCHEMAS / name}.schema" for name in ("core", "cosine", "inetorgperson")),
        f"pidfile {work_dir / 'slapd.pid'}",
        f"argsfile {work_dir / 'slapd.args'}",
        f"modulepath {MODULES}",
        "moduleload back_mdb",
    ]
    if tls:
        lines += [
            f"TLSCertificateFile {work_dir / 'localhost.pem'}",
            f"TLSCertificateKeyFile {work_dir / 'localhost.key'}",
        ]
    lines += [
        "database mdb",
        f'suffix "{BASE}"',
        f"directory {work_dir / 'data'}",
        "maxsize 16777216",
        "index objectClass,uid,mail,member,uniqueMember eq",
        # People prove their password by binding; only the service account reads the directory (as in production).
        "access to attrs=userPassword by anonymous auth by * none",
        f'access to * by dn.exact="{BIND_DN}" read by * none',
    ]
    return "\n".join(lines) + "\n"


def _entries(referral_port: int) -> str:
    entries = [
        {"dn": BASE, "objectClass": ["dcObject", "organization"], "dc": ["example"], "o": ["Example"]},
        {"dn": USER_BASE, "objectClass": ["organizationalUnit"], "ou": ["people"]},
        {"dn": GROUP_BASE, "objectClass": ["organizationalUnit"], "ou": ["groups"]},
        {
            "dn": BIND_DN,
            "objectClass": ["organizationalRole", "simpleSecurityObject"],
            "cn": ["reader"],
            "userPassword": [BIND_PASSWORD],
        },
    ]
    entries.append(
        {
            # A subordinate referral (RFC 4511 §4.5.3): searches of ou=people answer with a continuation reference.
            "dn": f"ou=partners,{USER_BASE}",
            "objectClass": ["referral", "extensibleObject"],
            "ou": ["partners"],
            "ref": [f"ldap://127.0.0.1:{referral_port}/ou=partners,{BASE}"],
        }
    )
    for uid, password in PEOPLE.items():
        entries.append(
            {
                "dn": user_dn(uid),
                "objectClass": ["inetOrgPerson"],
                "uid": [uid],
                "cn": [uid.title()],
                "sn": [uid.title()],
                "displayName": [f"{uid.title()} Example"],
                "mail": [f"{uid}@example.org"],
                "userPassword": [password],  # slapd compares a plain value as it is: fine for a test directory
            }
        )
    members = {
        "platform": [user_dn("alice")],
        "engineering": [group_dn("platform")],
        "everyone": [group_dn("engineering")],
        "loop-a": [user_dn("bob"), group_dn("loop-b")],
        "loop-b": [group_dn("loop-a")],
        "tier-1": [user_dn("carol")],
        **{f"tier-{tier}": [group_dn(f"tier-{tier - 1}")] for tier in range(2, TIERS + 1)},
    }
    for cn, member in members.items():
        entries.append({"dn": group_dn(cn), "objectClass": ["groupOfNames"], "cn": [cn], "member": member})
    entries.append(
        {
            "dn": group_dn("auditors"),
            "objectClass": ["groupOfUniqueNames"],
            "cn": ["auditors"],
            "uniqueMember": [user_dn("bob")],
        }
    )
    return "\n".join(_ldif(entry) for entry in entries)


def _ldif(entry: dict[str, Any]) -> str:
    lines = [f"dn: {entry['dn']}"]
    lines += [f"{name}: {value}" for name, values in entry.items() if name != "dn" for value in values]
    return "\n".join(lines) + "\n"
