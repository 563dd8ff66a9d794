"""Signing in against a real OpenLDAP directory (Debian's slapd, tests/support/slapd.py): usernames and emails,
nested groups, refusals that say nothing about who exists, filter injection, StartTLS and LDAPS with verified
certificates, pooled service connections, and the cache that stands in while the directory is down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from chamberlain.sso.identity import IdentityProviderUnavailable, SignInRefused
from chamberlain.sso.ldap.config import LdapProviderConfig
from chamberlain.sso.ldap.directory import AUTHN_CACHE, AUTHN_DIRECTORY, Directory
from chamberlain.store.database import Database
from chamberlain.store.directory_cache import DirectoryCache
from chamberlain.store.schema import directory_cache
from chamberlain.store.tenants import ensure_tenant
from tests.support.databases import migrated_database_url, opened_database
from tests.support.network import make_certificate
from tests.support.slapd import BIND_PASSWORD, PEOPLE, Slapd, group_dn, running_slapd, user_dn

pytestmark = pytest.mark.interop

ALICE_GROUPS = (group_dn("engineering"), group_dn("everyone"), group_dn("platform"))


@pytest.fixture(scope="module")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    with running_slapd(tmp_path_factory.mktemp("slapd"), tls=True) as running:
        yield running


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from migrated_database_url("sqlite", tmp_path_factory, "ldap-directory")


@pytest.fixture
async def database(url: str) -> AsyncIterator[Database]:
    async with opened_database(url) as opened:
        await ensure_tenant(opened, "acme")
        async with opened.begin() as connection:
            await connection.execute(directory_cache.delete())
        yield opened


def directory(database: Database, settings: dict[str, Any], name: str = "corp") -> Directory:
    return Directory(name, LdapProviderConfig.model_validate(settings), DirectoryCache(database, "acme"))


async def refusal(directory: Directory, username: str, password: str, bind_password: str = BIND_PASSWORD) -> Any:
    with pytest.raises(SignInRefused) as refused:
        await directory.authenticate(username, password, bind_password=bind_password)
    return refused.value


# -- signing in ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("username", ["alice", "ALICE", "alice@example.org", " Alice@Example.org "])
async def test_a_person_signs_in_with_their_uid_or_email_and_gets_their_nested_groups(
    slapd: Slapd, database: Database, username: str
) -> None:
    identity = await directory(database, slapd.provider_config()).authenticate(
        username, PEOPLE["alice"], bind_password=BIND_PASSWORD
    )
    assert identity.provider == "corp"
    assert identity.subject == user_dn("alice")
    assert identity.email == "alice@example.org"
    assert identity.display_name == "Alice Example"
    # platform directly; engineering through platform; everyone through engineering.
    assert identity.groups == ALICE_GROUPS
    assert identity.authn_context == (AUTHN_DIRECTORY,)
    assert not identity.mfa


async def test_groups_can_be_reported_by_cn_and_the_walk_survives_loops_and_stops_at_its_depth(
    slapd: Slapd, database: Database
) -> None:
    corp = directory(database, slapd.provider_config(group_name="cn"))
    bob = await corp.authenticate("bob", PEOPLE["bob"], bind_password=BIND_PASSWORD)
    # auditors is a groupOfUniqueNames; loop-a and loop-b contain each other.
    assert bob.groups == ("auditors", "loop-a", "loop-b")
    carol = await corp.authenticate("carol", PEOPLE["carol"], bind_password=BIND_PASSWORD)
    assert {f"tier-{tier}" for tier in range(1, 11)} == set(carol.groups)  # ten levels are followed, no more


async def test_a_wrong_password_and_an_unknown_person_are_refused_alike(slapd: Slapd, database: Database) -> None:
    corp = directory(database, slapd.provider_config())
    wrong = await refusal(corp, "alice", "not-her-password")
    unknown = await refusal(corp, "nobody", "not-her-password")
    for refused in (wrong, unknown):
        assert not isinstance(refused, IdentityProviderUnavailable)
        assert (refused.reason, refused.status_code) == ("ldap_invalid_credentials", 403)
    assert wrong.message == unknown.message


@pytest.mark.parametrize(("username", "password"), [("alice", ""), ("", PEOPLE["alice"]), ("   ", "x")])
async def test_an_empty_password_or_username_is_refused_before_any_bind(
    slapd: Slapd, database: Database, username: str, password: str
) -> None:
    # With a DN and no password, a simple bind is an unauthenticated bind (RFC 4513 §5.1.2), which servers may
    # answer with success: it must never be sent.
    before = slapd.bind_attempts_as(user_dn("alice"))
    refused = await refusal(directory(database, slapd.provider_config()), username, password)
    assert refused.reason == "ldap_invalid_credentials"
    assert slapd.bind_attempts_as(user_dn("alice")) == before


@pytest.mark.parametrize("username", ["*)(uid=*", "*", "al*", "alice)(uid=*", "*)(|(objectClass=*)", "alice\\"])
async def test_filter_metacharacters_in_a_username_match_nothing(
    slapd: Slapd, database: Database, username: str
) -> None:
    # Unescaped, "al*" would find alice alone and her password would sign her in; "*)(uid=*" would widen the filter.
    refused = await refusal(directory(database, slapd.provider_config()), username, PEOPLE["alice"])
    assert refused.reason == "ldap_invalid_credentials"


async def test_the_service_bind_happens_once_for_several_sign_ins(slapd: Slapd, database: Database) -> None:
    corp = directory(database, slapd.provider_config(pool_size=2))
    before = slapd.binds_as(slapd.bind_dn)
    for uid in ("alice", "bob", "carol", "alice"):
        await corp.authenticate(uid, PEOPLE[uid], bind_password=BIND_PASSWORD)
        await refusal(corp, uid, "a wrong password")  # a refusal keeps the service connection too
    assert slapd.binds_as(slapd.bind_dn) == before + 1
    assert slapd.binds_as(user_dn("alice")) >= 2  # each person's own password is still checked by a bind every time


async def test_concurrent_sign_ins_each_get_their_own_answer(slapd: Slapd, database: Database) -> None:
    corp = directory(database, slapd.provider_config(pool_size=2))
    people = ["alice", "bob", "carol"] * 3
    identities = await asyncio.gather(
        *(corp.authenticate(uid, PEOPLE[uid], bind_password=BIND_PASSWORD) for uid in people)
    )
    assert [identity.subject for identity in identities] == [user_dn(uid) for uid in people]


async def test_referrals_are_not_followed_with_our_credentials(slapd: Slapd, database: Database) -> None:
    # ou=partners,ou=people refers to another server (RFC 4511 §4.1.10): a client chasing the referral would connect
    # there and bind as the service account.
    partners = slapd.provider_config(user_base=f"ou=partners,{slapd.user_base}")
    with socket.socket() as elsewhere:
        elsewhere.bind(("127.0.0.1", slapd.referral_port))
        elsewhere.listen(8)
        elsewhere.setblocking(False)
        refused = await refusal(directory(database, partners), "alice", PEOPLE["alice"])
        assert isinstance(refused, IdentityProviderUnavailable)
        assert refused.reason == "ldap_error"
        # Continuation references in a search of ou=people (the referral is below it) are left out too.
        identity = await directory(database, slapd.provider_config()).authenticate(
            "alice", PEOPLE["alice"], bind_password=BIND_PASSWORD
        )
        assert identity.subject == user_dn("alice")
        with pytest.raises(BlockingIOError):
            elsewhere.accept()  # nobody came


async def test_a_refused_service_bind_is_a_misconfiguration_not_an_outage(slapd: Slapd, database: Database) -> None:
    corp = directory(database, slapd.provider_config())
    await corp.authenticate("alice", PEOPLE["alice"], bind_password=BIND_PASSWORD)  # cached now
    refused = await refusal(corp, "alice", PEOPLE["alice"], bind_password="rotated-but-not-in-the-vault")
    assert isinstance(refused, IdentityProviderUnavailable)
    assert refused.reason == "ldap_service_bind"  # and not the cache: the directory is up


async def test_no_password_reaches_a_message_or_the_log(
    slapd: Slapd, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    corp = directory(database, slapd.provider_config())
    messages = [
        (await refusal(corp, "alice", "wrong-password-xyzzy")).message,
        (await refusal(corp, "alice", PEOPLE["alice"], bind_password="wrong-bind-password-xyzzy")).message,
    ]
    for secret in ("wrong-password-xyzzy", "wrong-bind-password-xyzzy", BIND_PASSWORD, PEOPLE["alice"]):
        assert secret not in caplog.text
        assert all(secret not in message for message in messages)


# -- TLS -------------------------------------------------------------------------------------------------------------


async def test_start_tls_and_ldaps_sign_in_with_the_directory_certificate_trusted(
    slapd: Slapd, database: Database
) -> None:
    for settings in (
        slapd.provider_config(start_tls=True, ca_file=str(slapd.ca_file)),
        slapd.provider_config(url=slapd.ldaps_url, ca_file=str(slapd.ca_file)),
    ):
        identity = await directory(database, settings).authenticate("bob", PEOPLE["bob"], bind_password=BIND_PASSWORD)
        assert identity.subject == user_dn("bob")


async def test_a_certificate_that_does_not_verify_is_refused_and_the_cache_does_not_stand_in(
    slapd: Slapd, database: Database, tmp_path: Path
) -> None:
    await directory(database, slapd.provider_config()).authenticate(
        "alice", PEOPLE["alice"], bind_password=BIND_PASSWORD
    )
    other_ca, _ = make_certificate(tmp_path, "localhost")
    by_address = slapd.provider_config(start_tls=True, ca_file=str(slapd.ca_file))
    by_address["url"] = by_address["url"].replace("localhost", "127.0.0.1")
    for settings in (
        slapd.provider_config(start_tls=True),  # the system's CAs do not know the test CA
        slapd.provider_config(start_tls=True, ca_file=str(other_ca)),
        slapd.provider_config(url=slapd.ldaps_url, ca_file=str(other_ca)),
        by_address,  # the right CA, but the certificate names localhost, not 127.0.0.1
        slapd.provider_config(start_tls=True, ca_file=str(tmp_path / "missing.pem")),
    ):
        refused = await refusal(directory(database, settings), "alice", PEOPLE["alice"])
        assert isinstance(refused, IdentityProviderUnavailable)
        assert refused.reason == "ldap_tls"  # not "signed in from the cache", which holds alice


# -- the directory is down -------------------------------------------------------------------------------------------


@pytest.fixture
def own_slapd(tmp_path: Path) -> Iterator[Slapd]:
    """A directory of this test's own, which it may stop."""
    with running_slapd(tmp_path / "slapd") as running:
        yield running


async def test_a_person_the_directory_vouched_for_signs_in_from_the_cache_while_it_is_down(
    own_slapd: Slapd, database: Database
) -> None:
    corp = directory(database, own_slapd.provider_config())
    await corp.authenticate("alice@example.org", PEOPLE["alice"], bind_password=BIND_PASSWORD)
    await corp.authenticate("carol", PEOPLE["carol"], bind_password=BIND_PASSWORD)  # 3 letters: no local policy
    own_slapd.stop()

    cached = await corp.authenticate("Alice@example.org", PEOPLE["alice"], bind_password=BIND_PASSWORD)
    assert cached.authn_context == (AUTHN_CACHE,)
    assert (cached.subject, cached.email, cached.groups) == (user_dn("alice"), "alice@example.org", ALICE_GROUPS)
    assert (await corp.authenticate("carol", PEOPLE["carol"], bind_password=BIND_PASSWORD)).groups
    # The cache knows whom the directory vouched for, with which password, under the name they typed.
    for username, password in [("alice@example.org", "wrong"), ("alice", PEOPLE["alice"]), ("bob", PEOPLE["bob"])]:
        refused = await refusal(corp, username, password)
        assert isinstance(refused, IdentityProviderUnavailable)
        assert refused.reason == "ldap_unreachable"

    own_slapd.start()  # back: the pooled connections it dropped are replaced, and the directory decides again
    again = await corp.authenticate("alice", PEOPLE["alice"], bind_password=BIND_PASSWORD)
    assert again.authn_context == (AUTHN_DIRECTORY,)


async def test_pooled_connections_a_restarted_directory_dropped_are_replaced(
    own_slapd: Slapd, database: Database
) -> None:
    corp = directory(database, own_slapd.provider_config())
    await corp.authenticate("bob", PEOPLE["bob"], bind_password=BIND_PASSWORD)
    own_slapd.stop()
    own_slapd.start()
    identity = await corp.authenticate("bob", PEOPLE["bob"], bind_password=BIND_PASSWORD)
    assert identity.authn_context == (AUTHN_DIRECTORY,)  # the dead connection was not taken for an outage
    assert own_slapd.binds_as(own_slapd.bind_dn) == 2


async def test_the_cache_stands_in_only_within_its_ttl(own_slapd: Slapd, database: Database) -> None:
    corp = directory(database, own_slapd.provider_config(cache_ttl=1800))
    await corp.authenticate("alice", PEOPLE["alice"], bind_password=BIND_PASSWORD)
    own_slapd.stop()
    async with database.begin() as connection:
        await connection.execute(update(directory_cache).values(refreshed_at=time.time() - 1801))
    refused = await refusal(corp, "alice", PEOPLE["alice"])
    assert isinstance(refused, IdentityProviderUnavailable)


async def test_a_zero_ttl_keeps_nothing(own_slapd: Slapd, database: Database) -> None:
    corp = directory(database, own_slapd.provider_config(cache_ttl=0))
    await corp.authenticate("alice", PEOPLE["alice"], bind_password=BIND_PASSWORD)
    async with database.connect() as connection:
        assert (await connection.execute(select(directory_cache))).first() is None
    own_slapd.stop()
    assert (await refusal(corp, "alice", PEOPLE["alice"])).reason == "ldap_unreachable"


async def test_invalid_credentials_from_a_reachable_directory_change_nothing_in_the_cache(
    own_slapd: Slapd, database: Database
) -> None:
    corp = directory(database, own_slapd.provider_config())
    await corp.authenticate("alice", PEOPLE["alice"], bind_password=BIND_PASSWORD)

    async def kept() -> Any:
        async with database.connect() as connection:
            return (await connection.execute(select(directory_cache))).all()

    before = await kept()
    await refusal(corp, "alice", "a-new-password-the-directory-refuses")
    await refusal(corp, "dave", "whatever")
    assert await kept() == before
    own_slapd.stop()
    assert (await corp.authenticate("alice", PEOPLE["alice"], bind_password=BIND_PASSWORD)).authn_context == (
        AUTHN_CACHE,
    )
    await refusal(corp, "alice", "a-new-password-the-directory-refuses")


@contextlib.contextmanager
def silent_listener() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers: a hung directory."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield int(listener.getsockname()[1])


async def test_a_directory_that_never_answers_times_out_into_the_cache(slapd: Slapd, database: Database) -> None:
    await directory(database, slapd.provider_config()).authenticate("bob", PEOPLE["bob"], bind_password=BIND_PASSWORD)
    with silent_listener() as port:
        hung = directory(database, slapd.provider_config(url=f"ldap://127.0.0.1:{port}", timeout=1))
        cached = await hung.authenticate("bob", PEOPLE["bob"], bind_password=BIND_PASSWORD)
        assert cached.authn_context == (AUTHN_CACHE,)
        assert (await refusal(hung, "alice", PEOPLE["alice"])).reason == "ldap_unreachable"  # not cached
