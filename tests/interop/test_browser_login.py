"""The login and consent pages in a real headless Chromium, driven by Selenium through Debian's chromedriver.

What an HTTP client cannot check is checked here the way Chromium enforces it: the Content-Security-Policy
(`form-action` must let the consent form's redirect reach the client, `frame-ancestors 'none'` must stop framing),
the cookies the forms rely on (CSRF and session), the forms themselves and the redirects to the client. The client's
redirect URI is a small loopback HTTP server run by the test, so the browser's last redirect lands somewhere real.

Chromium and chromedriver come from Debian (`apt-get install chromium chromium-driver`); Selenium Manager is never
used (the driver path is given, and a call to it fails the test). Outside CI the tests skip when either is missing.
Set CHAMBERLAIN_BROWSER_SCREENSHOTS to a directory to keep screenshots of the login and consent pages.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests.support.chromium import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS, require_browser
from tests.support.server import RunningServer

pytestmark = pytest.mark.interop

WAIT = 20  # seconds: an upper bound for each explicit wait, never an expectation of speed
HOSTILE_NAME = "<script>alert(1)</script><img src=x onerror=alert(1)>"

CHROMIUM_OPTIONS = ("--headless", *CHROMIUM_FLAGS, "--window-size=900,800")


# -- the client's redirect URI: a loopback server that records what it receives --------------------------------


@dataclass
class Callback:
    port: int
    queries: list[dict[str, str]] = field(default_factory=list)
    received: threading.Event = field(default_factory=threading.Event)
    framing_target: str = ""

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/callback"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait(self, driver: Any) -> dict[str, str]:
        if not self.received.wait(WAIT):
            pytest.fail(
                f"the browser never reached the client's redirect URI; it is at {driver.current_url}, "
                f"console: {driver.get_log('browser')}"
            )
        assert len(self.queries) == 1, self.queries
        return self.queries[0]


def _handler(callback: Callback) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path == "/callback":
                callback.queries.append({key: values[0] for key, values in parse_qs(parts.query).items()})
                callback.received.set()
                body = b"<!doctype html><title>client</title><p id=done>The client received the response.</p>"
            elif parts.path == "/frame":
                # A hostile page that tries to frame the gateway's login page (clickjacking).
                body = f'<!doctype html><title>framer</title><iframe src="{callback.framing_target}"></iframe>'.encode()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def callback() -> Iterator[Callback]:
    record = Callback(port=0)
    http_server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(record))
    record.port = int(http_server.server_address[1])
    thread = threading.Thread(target=http_server.serve_forever, name="oauth-callback", daemon=True)
    thread.start()
    try:
        yield record
    finally:
        http_server.shutdown()
        http_server.server_close()
        thread.join(timeout=10)


# -- the browser ---------------------------------------------------------------------------------------------------


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    require_browser(executables=(CHROMIUM, CHROMEDRIVER), package="selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_OPTIONS:
        options.add_argument(flag)
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Leave any alert open, so a test can see it rather than have chromedriver dismiss it.
    options.set_capability("unhandledPromptBehavior", "ignore")
    service = Service(CHROMEDRIVER, log_output=os.devnull)
    # Selenium Manager downloads browsers and drivers; it must never run here.
    with mock.patch.object(SeleniumManager, "binary_paths", side_effect=AssertionError("Selenium Manager was called")):
        browser = webdriver.Chrome(service=service, options=options)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture(scope="module")
def screenshot_dir() -> Iterator[Path]:
    kept = os.environ.get("CHAMBERLAIN_BROWSER_SCREENSHOTS")
    if kept:
        path = Path(kept)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="chamberlain-screens-") as directory:
        yield Path(directory)


def _wait_for(driver: Any, condition: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT).until(condition)


def _by_css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions

    return _wait_for(driver, expected_conditions.presence_of_element_located((By.CSS_SELECTOR, selector)))


def _css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def _csp_violations(driver: Any) -> list[str]:
    """Console messages since the last call in which Chromium reports what the Content-Security-Policy refused."""
    return [entry["message"] for entry in driver.get_log("browser") if "Content Security Policy" in entry["message"]]


def _no_alert(driver: Any) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        driver.switch_to.alert  # noqa: B018 - the property raises when no dialog is open
    except NoAlertPresentException:
        return True
    return False


# -- the OAuth client side -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Authorization:
    client_id: str
    url: str
    state: str
    verifier: str


def _start(server: RunningServer, callback: Callback, client_name: str = "Browser Test Client") -> Authorization:
    registration = httpx.post(
        f"{server.base_url}/register",
        json={
            "client_name": client_name,
            "redirect_uris": [callback.redirect_uri],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
        },
        timeout=30,
    )
    assert registration.status_code == 201, registration.text
    client_id = registration.json()["client_id"]
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(12)
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": callback.redirect_uri,
        "state": state,
        "resource": server.resource("demo"),
        "scope": "mcp:tools",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    return Authorization(client_id, f"{server.base_url}/authorize?{urlencode(query)}", state, verifier)


def _sign_in(driver: Any, server: RunningServer, authorization: Authorization, screenshots: Path | None = None) -> None:
    driver.get(authorization.url)
    username = _by_css(driver, "form[action='/login'] input[name=username]")
    password = _css(driver, "form[action='/login'] input[name=password]")[0]
    assert username.get_attribute("autocomplete") == "username"
    assert password.get_attribute("type") == "password"
    assert password.get_attribute("autocomplete") == "current-password"
    assert _css(driver, "label[for=username]")
    assert _css(driver, "label[for=password]")
    assert _css(driver, "form[action='/login'] input[type=hidden][name=csrf_token]")[0].get_attribute("value")
    # The CSRF token is bound to a cookie the browser accepted.
    assert any(cookie["name"].endswith("csrf") for cookie in driver.get_cookies()), driver.get_cookies()
    # autofocus put the caret in the user-name field, so a person can start typing.
    assert driver.switch_to.active_element == username
    # The stylesheet loaded under the CSP (default-src 'none'; style-src 'self'): the card has its border radius.
    assert _css(driver, "main.card")[0].value_of_css_property("border-radius") == "12px"
    if screenshots is not None:
        driver.save_screenshot(str(screenshots / "login.png"))
    username.send_keys(server.user)
    password.send_keys(server.user_password)
    password.submit()
    _by_css(driver, "form[action='/authorize'] button[name=decision]")
    session = [cookie for cookie in driver.get_cookies() if cookie["name"].endswith("session")]
    assert session, driver.get_cookies()
    assert session[0]["httpOnly"]
    assert session[0]["sameSite"] == "Lax"


def _decide(driver: Any, decision: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f"button[name=decision][value={decision}]").click()


# -- the tests -------------------------------------------------------------------------------------------------------


def test_sign_in_and_allow_in_chromium_reaches_the_client_with_a_code(
    server: RunningServer, callback: Callback, driver: Any, screenshot_dir: Path
) -> None:
    authorization = _start(server, callback)
    _sign_in(driver, server, authorization, screenshot_dir)

    body = driver.find_element("tag name", "body").text
    assert "Browser Test Client" in body
    assert f"127.0.0.1:{callback.port}" in body  # the redirect host
    assert "mcp:tools" in body
    assert server.resource("demo") in body
    assert _css(driver, "button[name=decision][value=allow]")
    assert _css(driver, "button[name=decision][value=deny]")
    assert _css(driver, "form[action='/authorize'] input[type=hidden][name=csrf_token]")[0].get_attribute("value")
    driver.save_screenshot(str(screenshot_dir / "consent.png"))

    _decide(driver, "allow")
    received = callback.wait(driver)
    assert set(received) == {"code", "state", "iss"}, received
    assert received["state"] == authorization.state
    assert received["iss"] == server.base_url
    _by_css(driver, "#done")  # Chromium followed the redirect: form-action let it through
    assert not _csp_violations(driver)

    token = httpx.post(
        f"{server.base_url}/token",
        data={
            "grant_type": "authorization_code",
            "client_id": authorization.client_id,
            "code": received["code"],
            "redirect_uri": callback.redirect_uri,
            "code_verifier": authorization.verifier,
        },
        timeout=30,
    )
    assert token.status_code == 200, token.text
    tokens = token.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["access_token"]
    assert tokens["scope"] == "mcp:tools"


def test_deny_in_chromium_sends_access_denied_to_the_client(
    server: RunningServer, callback: Callback, driver: Any
) -> None:
    authorization = _start(server, callback)
    _sign_in(driver, server, authorization)
    _decide(driver, "deny")
    received = callback.wait(driver)
    assert received["error"] == "access_denied", received
    assert received["state"] == authorization.state
    assert received["iss"] == server.base_url
    assert "code" not in received
    _by_css(driver, "#done")
    assert not _csp_violations(driver)


def test_pages_cannot_be_framed_and_a_hostile_client_name_is_only_text(
    server: RunningServer, callback: Callback, driver: Any
) -> None:
    authorization = _start(server, callback, client_name=HOSTILE_NAME)

    for url in (authorization.url, f"{server.base_url}/login"):
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200, page.text
        policy = page.headers["content-security-policy"]
        directives = {part.strip().split(" ", 1)[0]: part.strip() for part in policy.split(";")}
        assert directives["frame-ancestors"] == "frame-ancestors 'none'", policy
        assert directives["default-src"] == "default-src 'none'", policy
        assert "script-src" not in directives, policy
        assert page.headers["x-frame-options"] == "DENY"

    # Chromium enforces it: a page on another origin that frames the login page gets no form. Waiting for the
    # refusal first means the frame has been dealt with before it is looked into.
    callback.framing_target = authorization.url
    driver.get(f"{callback.origin}/frame")
    _wait_for(driver, lambda d: any("frame-ancestors" in message for message in _csp_violations(d)))
    driver.switch_to.frame(_by_css(driver, "iframe"))
    assert not _css(driver, "input[name=password]")
    driver.switch_to.default_content()

    # The hostile name is shown on the login page and on the consent page as text, never as markup.
    driver.get(authorization.url)
    _by_css(driver, "form[action='/login']")
    assert HOSTILE_NAME in driver.find_element("tag name", "body").text
    assert not _css(driver, "script")
    assert not _css(driver, "img")
    assert _no_alert(driver)
    _sign_in(driver, server, authorization)
    assert HOSTILE_NAME in driver.find_element("tag name", "body").text
    assert _css(driver, "strong.client")[0].text == HOSTILE_NAME
    assert not _css(driver, "script")
    assert not _css(driver, "img")
    assert _no_alert(driver)
    assert not _csp_violations(driver)
