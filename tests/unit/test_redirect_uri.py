"""Redirect URI registration rules and request-time matching."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chamberlain.oauth.errors import INVALID_REDIRECT_URI, OAuthError
from chamberlain.oauth.redirect_uri import (
    MAX_REDIRECT_URI_LENGTH,
    redirect_uri_matches,
    validate_redirect_uri,
)


def _refused(uri: str) -> OAuthError:
    with pytest.raises(OAuthError) as caught:
        validate_redirect_uri(uri)
    assert caught.value.error == INVALID_REDIRECT_URI
    assert caught.value.description
    return caught.value


@pytest.mark.parametrize(
    "uri",
    [
        "https://client.example/cb",
        "https://client.example:8443/oauth/callback?tenant=a",
        "https://127.0.0.1/cb",
        "http://127.0.0.1/cb",
        "http://127.0.0.1:33418/callback",
        "http://127.255.0.9:1/cb",
        "http://[::1]:8080/cb",
        "http://localhost:3000/callback",
        "http://localhost/callback",
        "com.example.app:/oauth2redirect/example-provider",
        "com.example.app://callback",
        "https://client.example/cb%20x",
    ],
)
def test_accepts_valid_redirect_uris(uri: str) -> None:
    validate_redirect_uri(uri)


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("/relative/cb", "absolute"),
        ("client.example/cb", "absolute"),
        ("https://client.example/cb#frag", "fragment"),
        ("https://client.example/cb#", "fragment"),
        ("http://client.example/cb", "https"),
        ("http://10.0.0.1/cb", "https"),
        ("http://127.1/cb", "host"),
        ("http://0x7f.0.0.1/cb", "host"),
        ("http://localhost.evil.example/cb", "https"),
        ("http://127.0.0.1.evil.example/cb", "https"),
        ("javascript:alert(1)", "javascript"),
        ("JavaScript:alert(1)", "javascript"),
        ("data:text/html,hi", "data"),
        ("file:///etc/passwd", "file"),
        ("vbscript:msgbox", "vbscript"),
        ("myapp:/cb", "private-use"),
        ("ftp://client.example/cb", "private-use"),
        ("com.example.app:", "path"),
        ("https://good.example@evil.example/", "userinfo"),
        ("https://user:pass@client.example/cb", "userinfo"),
        ("http://localhost@evil.example/cb", "userinfo"),
        ("com.example.app://user@host/cb", "userinfo"),
        ("https://client.example/c b", "whitespace"),
        ("https://client.example/cb\n", "whitespace"),
        ("https://client.example/cb\x00", "control"),
        (" https://client.example/cb", "whitespace"),
        ("https://client.example\\@evil.example/cb", "character"),
        ("https://clíent.example/cb", "character"),
        ("https://client.example/%zz", "percent"),
        ("https:///cb", "host"),
        ("https:/client.example/cb", "form"),
        ("https://client.example:0/cb", "port"),
        ("https://client.example:99999/cb", "port"),
        ("https://client.example:/cb", "port"),
        ("https://-bad.example/cb", "host"),
        ("https://[::1/cb", "IP literal"),
        ("https://[fe80::1%25eth0]/cb", "IPv6"),
        ("", "non-empty"),
    ],
)
def test_refuses_invalid_redirect_uris(uri: str, problem: str) -> None:
    assert problem.lower() in (_refused(uri).description or "").lower()


def test_refuses_overlong_uri() -> None:
    base = "https://client.example/"
    validate_redirect_uri(base + "a" * (MAX_REDIRECT_URI_LENGTH - len(base)))
    _refused(base + "a" * (MAX_REDIRECT_URI_LENGTH - len(base) + 1))


def test_refuses_non_strings() -> None:
    _refused(None)  # type: ignore[arg-type]


@given(st.text(), st.text())
def test_any_uri_with_a_fragment_is_refused(before: str, after: str) -> None:
    _refused(f"https://client.example/{before}#{after}")
    _refused(f"{before}#{after}")


@given(st.text())
def test_validation_only_ever_raises_oauth_errors(uri: str) -> None:
    failure: OAuthError | None = None
    try:
        validate_redirect_uri(uri)
    except OAuthError as error:
        failure = error
    assert failure is None or failure.error == INVALID_REDIRECT_URI


_LABEL = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=10)


@given(st.lists(_LABEL, min_size=2, max_size=4), st.sampled_from(["", ":8080", ":1"]))
def test_http_is_refused_for_every_non_loopback_host_name(labels: list[str], port: str) -> None:
    host = ".".join([*labels, "example"])
    _refused(f"http://{host}{port}/cb")
    validate_redirect_uri(f"https://{host}{port}/cb")


# --- matching -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registered", "requested"),
    [
        ("https://client.example/cb", "https://client.example/cb/"),
        ("https://client.example/cb/", "https://client.example/cb"),
        ("https://client.example/cb", "https://client.example/other"),
        ("https://client.example/cb", "https://client.example/CB"),
        ("https://client.example/cb", "https://CLIENT.example/cb"),
        ("https://client.example/cb", "HTTPS://client.example/cb"),
        ("https://client.example/cb", "https://evil.example/cb"),
        ("https://client.example/cb", "https://client.example.evil.example/cb"),
        ("https://client.example/cb", "https://client.example@evil.example/cb"),
        ("https://client.example/cb", "https://client.example:443/cb"),
        ("https://client.example/cb", "https://client.example/cb?x=1"),
        ("https://client.example/cb", "https://client.example/cb#x"),
        ("https://client.example/cb", "https://client.example/%63b"),
        ("https://client.example/cb", "https://client.example/a/../cb"),
        ("https://client.example:8443/cb", "https://client.example:9443/cb"),
        ("com.example.app:/cb", "com.example.app:/cb/"),
        # Loopback: only the port may change.
        ("http://127.0.0.1/cb", "http://127.0.0.1/cb/"),
        ("http://127.0.0.1:1234/cb", "http://127.0.0.2:1234/cb"),
        ("http://127.0.0.1:1234/cb", "http://localhost:1234/cb"),
        ("http://localhost:1234/cb", "http://LOCALHOST:1234/cb"),
        ("http://127.0.0.1:1234/cb", "https://127.0.0.1:1234/cb"),
        ("http://127.0.0.1:1234/cb", "http://127.0.0.1:1234/cb?x=1"),
        ("http://127.0.0.1:1234/cb", "http://127.0.0.1:1234/cb#x"),
        ("http://127.0.0.1:1234/cb", "http://127.0.0.1:5678/other"),
        ("http://127.0.0.1:1234/cb", "http://127.0.0.1:0/cb"),
        ("http://127.0.0.1:1234/cb", "http://127.0.0.1:5678@evil.example/cb"),
        ("http://127.0.0.1:1234", "http://127.0.0.1:5678/"),
        ("http://[::1]:1234/cb", "http://[0::1]:5678/cb"),
        ("https://127.0.0.1:1234/cb", "https://127.0.0.1:5678/cb"),
        ("https://localhost:1234/cb", "https://localhost:5678/cb"),
    ],
)
def test_mismatches(registered: str, requested: str) -> None:
    assert not redirect_uri_matches(registered, requested)


@pytest.mark.parametrize(
    ("registered", "requested"),
    [
        ("https://client.example/cb", "https://client.example/cb"),
        ("com.example.app:/cb", "com.example.app:/cb"),
        ("http://127.0.0.1/cb", "http://127.0.0.1:51234/cb"),
        ("http://127.0.0.1:8080/cb", "http://127.0.0.1:51234/cb"),
        ("http://127.0.0.1:8080/cb", "http://127.0.0.1/cb"),
        ("http://[::1]:8080/cb?x=1", "http://[::1]:9/cb?x=1"),
        ("http://localhost:3000/callback", "http://localhost:61000/callback"),
    ],
)
def test_matches(registered: str, requested: str) -> None:
    assert redirect_uri_matches(registered, requested)


_LOOPBACK_HOSTS = ["127.0.0.1", "127.10.20.30", "localhost", "[::1]"]
_PATH = st.text(string.ascii_letters + string.digits + "/-._~", max_size=12).map(lambda p: "/" + p)
_QUERY = st.one_of(st.none(), st.text(string.ascii_letters + string.digits + "=&", max_size=8))
_PORT = st.one_of(st.none(), st.integers(1, 65535))


def _loopback(host: str, port: int | None, path: str, query: str | None, scheme: str = "http") -> str:
    return (
        f"{scheme}://{host}"
        + (f":{port}" if port is not None else "")
        + path
        + (f"?{query}" if query is not None else "")
    )


@given(st.sampled_from(_LOOPBACK_HOSTS), _PORT, _PORT, _PATH, _QUERY)
def test_loopback_port_may_differ(host: str, port: int | None, other: int | None, path: str, query: str | None) -> None:
    registered = _loopback(host, port, path, query)
    validate_redirect_uri(registered)
    assert redirect_uri_matches(registered, _loopback(host, other, path, query))


@given(
    st.sampled_from(_LOOPBACK_HOSTS),
    _PORT,
    _PORT,
    _PATH,
    _QUERY,
    st.sampled_from(["host", "path", "query", "scheme", "slash"]),
    st.data(),
)
def test_any_non_port_change_to_a_loopback_uri_fails_to_match(
    host: str,
    port: int | None,
    other_port: int | None,
    path: str,
    query: str | None,
    change: str,
    data: st.DataObject,
) -> None:
    registered = _loopback(host, port, path, query)
    parts = {"host": host, "path": path, "query": query, "scheme": "http"}
    if change == "host":
        parts["host"] = data.draw(st.sampled_from([h for h in [*_LOOPBACK_HOSTS, "LocalHost"] if h != host]))
    elif change == "path":
        parts["path"] = data.draw(_PATH.filter(lambda p: p != path))
    elif change == "query":
        parts["query"] = data.draw(_QUERY.filter(lambda q: q != query))
    elif change == "scheme":
        parts["scheme"] = data.draw(st.sampled_from(["https", "HTTP", "Http"]))
    else:
        parts["path"] = path + "/"
    requested = _loopback(
        parts["host"] or "", other_port, parts["path"] or "", parts["query"], parts["scheme"] or "http"
    )
    assert not redirect_uri_matches(registered, requested)


@given(st.text(min_size=1), st.text(min_size=1))
def test_non_loopback_uris_match_only_when_identical(a: str, b: str) -> None:
    registered = f"https://client.example/{a}"
    requested = f"https://client.example/{b}"
    assert redirect_uri_matches(registered, requested) == (a == b)
