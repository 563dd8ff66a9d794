"""`chamberlain sso` on a real initialised store: providers validated before anything is stored (errors name the
option), secrets only from standard input and only into the vault (never in the configuration, the output or the
audit log), one provider per domain, removal that forgets links and secrets, and `test` against real IdPs on loopback
(oidc-provider, slapd) and an unreachable one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import typer
from typer.testing import CliRunner, Result

from chamberlain.audit.reader import read_events
from chamberlain.cli import config as config_cli
from chamberlain.cli import sso, vault
from chamberlain.cli.group import Commands
from chamberlain.cli.init import init
from chamberlain.settings import load_settings
from chamberlain.store.database import Database, create_database
from chamberlain.store.federated_identities import FederatedIdentityRepository
from chamberlain.store.group_mappings import GroupMappingRepository
from chamberlain.store.tenants import TenantRepository
from chamberlain.store.users import UserRepository
from tests.support.network import make_certificate
from tests.support.server import free_port

T = TypeVar("T")
SECRET = "client-secret-5f0c1e9a77d2"
ISSUER = "https://company.okta.example"


def _app() -> typer.Typer:
    """The commands as cli/main.py registers them (the lead adds `sso` and `config` there)."""
    root = typer.Typer(cls=Commands, pretty_exceptions_enable=False, add_completion=False)
    root.command()(init)
    root.add_typer(sso.app, name="sso")
    root.add_typer(config_cli.app, name="config")
    root.add_typer(vault.app, name="vault")
    return root


APP = _app()


@dataclass
class Home:
    data_dir: Path
    outputs: list[str] = field(default_factory=list)

    def cli(self, *args: str, stdin: str | None = None) -> Result:
        result = CliRunner().invoke(APP, [*args, "--data-dir", str(self.data_dir)], input=stdin, env={"COLUMNS": "250"})
        self.outputs.append(result.output)
        return result

    def ok(self, *args: str, stdin: str | None = None) -> Result:
        result = self.cli(*args, stdin=stdin)
        assert result.exit_code == 0, result.output
        return result

    def run(self, work: Callable[[Database], Awaitable[T]]) -> T:
        settings = load_settings(data_dir=self.data_dir, environ={})

        async def opened() -> T:
            database = create_database(settings.effective_database_url)
            try:
                return await work(database)
            finally:
                await database.dispose()

        return asyncio.run(opened())

    def stored(self) -> dict[str, Any]:
        async def read(database: Database) -> dict[str, Any]:
            row = await TenantRepository(database).get("default")
            assert row is not None
            return row.config or {}

        return self.run(read)

    def audit_text(self) -> str:
        async def read(database: Database) -> str:
            return json.dumps([event.public for event in await read_events(database, "default", limit=1000)])

        return self.run(read)

    def add_okta(self, *more: str, name: str = "okta", domain: str = "company.com") -> Result:
        return self.cli(
            "sso", "add", "okta", "--issuer", ISSUER, "--client-id", "0oa1", "--client-secret-stdin",
            "--domain", domain, "--name", name, *more, stdin=SECRET + "\n",
        )  # fmt: skip


@pytest.fixture
def home(tmp_path: Path) -> Home:
    initialised = Home(tmp_path)
    initialised.ok("init")
    return initialised


def one_line(text: str) -> str:
    return " ".join(text.split())


def test_add_okta_stores_a_vault_reference_and_the_secret_only_in_the_vault(home: Home) -> None:
    added = home.add_okta()
    assert added.exit_code == 0, added.output
    provider = home.stored()["sso"]["providers"]["okta"]
    assert provider == {
        "kind": "oidc",
        "preset": "okta",
        "issuer": ISSUER,
        "client_id": "0oa1",
        "client_secret": "sso/okta",
        "domains": ["company.com"],
    }
    listed = home.ok("vault", "list", "sso").output
    assert "client_secret" in listed
    assert "sso" in listed
    home.ok("sso", "list")
    home.ok("sso", "show", "okta")
    for output in home.outputs:
        assert SECRET not in output
    assert home.ok("vault", "get", "sso", "okta").stdout == SECRET
    assert SECRET not in json.dumps(home.stored())
    assert SECRET not in home.audit_text()
    assert "tenant:default/sso" in home.audit_text()  # the configuration change was audited


def test_list_shows_what_an_admin_needs_and_no_secret(home: Home) -> None:
    home.add_okta()
    listed = home.ok("sso", "list").output
    assert "okta" in listed
    assert "oidc" in listed
    assert ISSUER in listed
    assert "company.com" in listed
    assert SECRET not in listed


def test_a_domain_already_captured_is_refused_naming_both_providers(home: Home) -> None:
    home.add_okta()
    refused = home.add_okta(name="second")
    assert refused.exit_code == 2
    message = one_line(refused.output)
    assert "--domain company.com" in message
    assert "'okta'" in message
    assert "'second'" in message
    assert set(home.stored()["sso"]["providers"]) == {"okta"}
    assert home.cli("vault", "get", "sso", "second").exit_code != 0  # no secret was stored for it


def test_a_name_already_taken_is_refused(home: Home) -> None:
    home.add_okta()
    refused = home.add_okta(domain="other.example")
    assert refused.exit_code != 0
    assert "already has a provider 'okta'" in one_line(refused.output)


@pytest.mark.parametrize(
    ("issuer", "problem"),
    [("http://idp.example.com", "must use https"), ("not a url", "absolute http(s) URL")],
)
def test_an_invalid_issuer_is_refused_naming_issuer(home: Home, issuer: str, problem: str) -> None:
    refused = home.cli(
        "sso", "add", "okta", "--issuer", issuer, "--client-id", "x", "--client-secret-stdin", "--domain", "a.example",
        stdin=SECRET,
    )  # fmt: skip
    assert refused.exit_code == 2
    assert "Traceback" not in refused.output
    assert one_line(refused.output).startswith("error: --issuer: ")
    assert problem in refused.output
    assert "sso" not in home.stored()
    assert SECRET not in refused.output


def test_a_bad_domain_and_a_bad_name_are_refused_naming_the_option(home: Home) -> None:
    bad_domain = home.add_okta(domain="nodots")
    assert bad_domain.exit_code == 2
    assert "--domain" in one_line(bad_domain.output)
    bad_name = home.add_okta(name="Not A Name")
    assert bad_name.exit_code == 2
    assert "--name" in one_line(bad_name.output)


def test_presets_check_their_own_options(home: Home) -> None:
    google = home.cli(
        "sso", "add", "google", "--issuer", "https://accounts.google.com", "--client-id", "g",
        "--domain", "corp.example",
    )  # fmt: skip
    assert google.exit_code == 0, google.output
    assert home.stored()["sso"]["providers"]["google"]["hosted_domains"] == ["corp.example"]
    entra = home.cli(
        "sso", "add", "entra", "--entra-tenant", "contoso.example", "--client-id", "e", "--client-secret-stdin",
        "--domain", "contoso.example", stdin=SECRET,
    )  # fmt: skip
    assert entra.exit_code == 0, entra.output
    assert home.stored()["sso"]["providers"]["entra"]["entra_tenant"] == "contoso.example"
    bad_tenant = home.cli(
        "sso", "add", "entra", "--entra-tenant", "not valid!", "--client-id", "e", "--name", "entra2",
    )  # fmt: skip
    assert bad_tenant.exit_code == 2
    assert one_line(bad_tenant.output).startswith("error: --entra-tenant must be a directory (tenant) id")
    no_issuer = home.cli("sso", "add", "okta", "--client-id", "o", "--name", "okta2")
    assert no_issuer.exit_code == 2
    assert "--issuer is required" in no_issuer.output


def test_an_empty_secret_on_stdin_is_refused(home: Home) -> None:
    refused = home.cli(
        "sso", "add", "okta", "--issuer", ISSUER, "--client-id", "x", "--client-secret-stdin", "--domain", "c.example",
        stdin="",
    )  # fmt: skip
    assert refused.exit_code == 2
    assert "--client-secret-stdin" in one_line(refused.output)
    assert "sso" not in home.stored()


def test_a_secret_is_never_taken_as_an_argument(home: Home) -> None:
    refused = home.cli("sso", "add", "okta", "--issuer", ISSUER, "--client-id", "x", "--client-secret", SECRET)
    assert refused.exit_code == 2
    assert SECRET not in refused.output


def test_remove_forgets_the_provider_its_links_and_its_secret(home: Home) -> None:
    home.add_okta()
    home.add_okta(name="keep", domain="keep.example")

    async def link(database: Database) -> tuple[str, str]:
        users = UserRepository(database, "default")
        first, second = await users.add("ann", None, ()), await users.add("ben", None, ())
        links = FederatedIdentityRepository(database, "default")
        assert await links.link("okta", "subject-1", first.id)
        assert await links.link("keep", "subject-2", second.id)
        return first.id, second.id

    _, kept_user = home.run(link)
    removed = home.ok("sso", "remove", "okta")
    assert "forgot 1 federated link" in one_line(removed.output)
    assert set(home.stored()["sso"]["providers"]) == {"keep"}
    assert home.cli("vault", "get", "sso", "okta").exit_code != 0
    assert home.ok("vault", "get", "sso", "keep").stdout == SECRET

    async def links(database: Database) -> tuple[str | None, str | None]:
        repository = FederatedIdentityRepository(database, "default")
        return await repository.user_of("okta", "subject-1"), await repository.user_of("keep", "subject-2")

    assert home.run(links) == (None, kept_user)
    assert home.cli("sso", "remove", "okta").exit_code == 1  # gone


def test_unknown_provider_is_a_clear_error(home: Home) -> None:
    for command in ("show", "test", "remove"):
        result = home.cli("sso", command, "nobody")
        assert result.exit_code == 1
        assert "no " in result.output
        assert "'nobody'" in result.output
        assert "Traceback" not in result.output


def test_test_reports_an_unreachable_issuer_clearly(home: Home) -> None:
    issuer = f"http://127.0.0.1:{free_port()}"
    assert home.cli(
        "sso", "add", "oidc", "--issuer", issuer, "--client-id", "x", "--domain", "down.example"
    ).exit_code == 0  # fmt: skip
    tested = home.cli("sso", "test", "oidc")
    assert tested.exit_code == 1
    text = one_line(tested.output)
    assert "FAIL discovery" in text
    assert "could not be reached" in text
    assert "Traceback" not in tested.output


@pytest.mark.interop
def test_test_passes_against_a_real_openid_provider(home: Home) -> None:
    from tests.support.oidc_idp import running_oidc_idp

    with running_oidc_idp(redirect_uris=["http://127.0.0.1:9/sso/idp/callback"]) as idp:
        added = home.cli(
            "sso", "add", "oidc", "--issuer", idp.issuer, "--client-id", idp.client_id, "--client-secret-stdin",
            "--domain", "example.com", "--name", "idp", stdin=idp.client_secret,
        )  # fmt: skip
        assert added.exit_code == 0, added.output
        tested = home.cli("sso", "test", "idp")
    assert tested.exit_code == 0, tested.output
    text = one_line(tested.output)
    assert "OK client secret: sso/idp in the vault" in text
    assert "OK discovery" in text
    assert "OK JWKS" in text
    assert "signing key" in text
    assert idp.client_secret not in tested.output


@pytest.mark.interop
def test_test_binds_and_searches_a_real_directory(home: Home, tmp_path: Path) -> None:
    from tests.support.slapd import require_slapd, running_slapd

    require_slapd()
    (tmp_path / "ldap").mkdir()
    with running_slapd(tmp_path / "ldap") as directory:
        add = (
            "sso", "add", "ldap", "--url", directory.url, "--bind-dn", directory.bind_dn, "--bind-password-stdin",
            "--user-base", directory.user_base, "--group-base", directory.group_base, "--domain", "example.org",
        )  # fmt: skip
        assert home.cli(*add, stdin=directory.bind_password).exit_code == 0
        good = home.cli("sso", "test", "ldap")
        home.ok("vault", "set", "sso", "ldap", "--from-stdin", stdin="wrong-password")
        bad = home.cli("sso", "test", "ldap")
    assert good.exit_code == 0, good.output
    assert "OK service bind" in one_line(good.output)
    assert "OK user base" in one_line(good.output)
    assert bad.exit_code == 1
    assert "FAIL service bind" in one_line(bad.output)
    assert directory.bind_password not in good.output + bad.output


def test_ldap_in_the_clear_off_loopback_is_refused_naming_url(home: Home) -> None:
    refused = home.cli(
        "sso", "add", "ldap", "--url", "ldap://dc.corp.example", "--bind-dn", "cn=r", "--bind-password-stdin",
        "--user-base", "ou=p", "--group-base", "ou=g", stdin="pw",
    )  # fmt: skip
    assert refused.exit_code == 2
    assert "ldap:// sends passwords in the clear" in one_line(refused.output)


def test_saml_test_reports_certificate_expiry(home: Home, tmp_path: Path) -> None:
    certificate = make_certificate(tmp_path, "idp.example")[0].read_text()

    async def store(database: Database) -> None:
        config = {
            "sso": {
                "providers": {
                    "corp": {
                        "kind": "saml",
                        "idp_entity_id": "https://idp.example/metadata",
                        "sso_url": "https://idp.example/sso",
                        "certificates": [certificate],
                        "domains": ["corp.example"],
                    }
                }
            }
        }
        await TenantRepository(database).set_config("default", config)

    home.run(store)
    tested = home.cli("sso", "test", "corp")
    assert tested.exit_code == 0, tested.output
    assert "OK certificate 1" in one_line(tested.output)
    assert "expires 20" in tested.output


def idp_metadata(certificate_pem: str, entity_id: str = "https://idp.corp.example/metadata") -> str:
    body = "".join(line for line in certificate_pem.splitlines() if "CERTIFICATE" not in line)
    return f"""<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#"
    entityID="{entity_id}">
  <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{body}</ds:X509Certificate>
    </ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
        Location="https://idp.corp.example/sso"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>
"""


def test_add_saml_from_a_metadata_file_then_test_reports_the_certificate(home: Home, tmp_path: Path) -> None:
    certificate = make_certificate(tmp_path, "idp.corp.example")[0].read_text()
    metadata = tmp_path / "idp.xml"
    metadata.write_text(idp_metadata(certificate))
    added = home.cli("sso", "add", "saml", "--metadata", str(metadata), "--domain", "corp.example", "--name", "corp")
    assert added.exit_code == 0, added.output
    provider = home.stored()["sso"]["providers"]["corp"]
    assert provider["idp_entity_id"] == "https://idp.corp.example/metadata"
    assert provider["sso_url"] == "https://idp.corp.example/sso"
    assert len(provider["certificates"]) == 1
    tested = home.cli("sso", "test", "corp")
    assert tested.exit_code == 0, tested.output
    assert "OK certificate 1: CN=idp.corp.example, expires 20" in one_line(tested.output)


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ("missing.xml", "cannot read it"),
        ("not-metadata.xml", "no identity provider (IDPSSODescriptor)"),
        ("http://127.0.0.1:{port}/metadata", "could not be read"),
        ("http://idp.corp.example/metadata", "must be https"),
    ],
)
def test_unusable_saml_metadata_is_refused_naming_metadata(
    home: Home, tmp_path: Path, metadata: str, problem: str
) -> None:
    (tmp_path / "not-metadata.xml").write_text("<html>hello</html>")
    where = str(tmp_path / metadata) if metadata.endswith(".xml") else metadata.format(port=free_port())
    refused = home.cli("sso", "add", "saml", "--metadata", where, "--domain", "corp.example")
    assert refused.exit_code == 2
    text = one_line(refused.output)
    assert text.startswith(f"error: --metadata {where}:")
    assert problem in text
    assert "sso" not in home.stored()


def test_map_sets_a_groups_roles_audited_and_refuses_undefined_roles(home: Home) -> None:
    group = "cn=platform,ou=groups,dc=example,dc=org"
    home.ok("sso", "map", group, "developer", "admin")

    async def roles(database: Database) -> tuple[str, ...] | None:
        found = await GroupMappingRepository(database, "default").get(group)
        return found.roles if found else None

    assert home.run(roles) == ("admin", "developer")
    assert group in home.ok("sso", "mappings").output
    refused = home.cli("sso", "map", group, "developr")
    assert refused.exit_code == 2
    assert "defines no role 'developr'" in one_line(refused.output)
    assert home.run(roles) == ("admin", "developer")
    assert f"group:{group}" in home.audit_text()
    home.ok("sso", "unmap", group)
    assert home.run(roles) is None
    assert home.cli("sso", "unmap", group).exit_code == 1
