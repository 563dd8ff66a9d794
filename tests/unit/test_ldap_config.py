"""An LDAP provider's settings: passwords never cross the network in the clear, and filters are well-formed."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from chamberlain.sso.config import SsoConfig
from chamberlain.sso.ldap.config import ACTIVE_DIRECTORY_USER_FILTER, OPENLDAP_USER_FILTER, LdapProviderConfig

LDAPS = {
    "kind": "ldap",
    "url": "ldaps://dc1.corp.example:636",
    "bind_dn": "CN=chamberlain,OU=Service,DC=corp,DC=example",
    "bind_password": "sso/ad",
    "user_base": "OU=People,DC=corp,DC=example",
    "group_base": "OU=Groups,DC=corp,DC=example",
}


def provider(**changes: Any) -> LdapProviderConfig:
    config = SsoConfig.model_validate({"providers": {"corp": {**LDAPS, **changes}}})
    found = config.providers["corp"]
    assert isinstance(found, LdapProviderConfig)
    return found


def test_defaults_verify_tls_cache_for_eight_hours_and_report_group_dns() -> None:
    config = provider()
    assert (config.start_tls, config.ca_file, config.group_name, config.cache_ttl) == (False, None, "dn", 8 * 3600)
    assert config.search_filter == OPENLDAP_USER_FILTER
    assert provider(active_directory=True).search_filter == ACTIVE_DIRECTORY_USER_FILTER
    assert provider(user_filter="(employeeNumber={username})").search_filter == "(employeeNumber={username})"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"url": "ldap://dc1.corp.example:389"}, "ldap:// sends passwords in the clear"),
        ({"url": "ldaps://dc1.corp.example", "start_tls": True}, "already TLS"),
        ({"url": "https://dc1.corp.example"}, "url must be"),
        ({"url": "ldaps://dc1.corp.example/dc=corp,dc=example"}, "url must be"),
        ({"url": "ldaps://"}, "url must be"),
        ({"user_filter": "uid={username}"}, "user_filter"),
        ({"user_filter": "(uid=jane)"}, "user_filter"),
        ({"user_filter": "(uid={username})(mail={username})"}, "user_filter"),
        ({"user_filter": "(|(uid={username})"}, "user_filter"),
        ({"group_name": "samaccountname"}, "Input should be"),
        ({"timeout": 0}, "greater than or equal"),
        ({"cache_ttl": -1}, "greater than or equal"),
        ({"pool_size": 0}, "greater than or equal"),
    ],
)
def test_unsafe_or_malformed_settings_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as problem:
        provider(**changes)
    assert message in str(problem.value)


def test_plain_ldap_is_allowed_with_start_tls_or_on_loopback() -> None:
    assert provider(url="ldap://dc1.corp.example", start_tls=True).start_tls
    assert provider(url="ldap://127.0.0.1:3890").url == "ldap://127.0.0.1:3890"
    assert provider(url="ldap://localhost:3890").url == "ldap://localhost:3890"
