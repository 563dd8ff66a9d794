"""A headless 'browser' for the login and consent pages: keeps cookies, reads the real HTML forms and submits
them the way a person's browser would (hidden inputs included). No JavaScript is needed by the pages."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin

import httpx

# A way to sign in at the login page (single sign-on, a directory account): the page in, the gateway's answer out.
SignIn = Callable[["Browser", httpx.Response], Awaitable[httpx.Response]]
_LOGIN_FORM = re.compile(r'action="(/t/[a-z0-9-]+)?/login"')


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)
    buttons: list[tuple[str, str]] = field(default_factory=list)
    inputs: dict[str, dict[str, str]] = field(default_factory=dict)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append(Form(values.get("action", ""), values.get("method", "get").lower()))
        elif self.forms and tag == "input" and "name" in values:
            self.forms[-1].inputs[values["name"]] = values
            if values.get("type") == "hidden" or "value" in values:
                self.forms[-1].fields[values["name"]] = values.get("value", "")
        elif self.forms and tag == "button" and "name" in values:
            self.forms[-1].buttons.append((values["name"], values.get("value", "")))


def parse_forms(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


class Browser:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.AsyncClient(base_url=base_url, follow_redirects=False, timeout=30)

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def get(self, url: str) -> httpx.Response:
        return await self.http.get(url)

    async def submit(self, page: httpx.Response, values: dict[str, str], *, form_index: int = 0) -> httpx.Response:
        forms = parse_forms(page.text)
        assert forms, f"no form on the page (status {page.status_code}): {page.text[:300]}"
        form = forms[form_index]
        data = {**form.fields, **values}
        return await self.http.request(form.method.upper(), urljoin(str(page.url), form.action), data=data)

    async def follow_to_client(self, response: httpx.Response) -> httpx.Response:
        """Follows redirects while they stay on the gateway; stops at the first one that leaves it."""
        while response.status_code in (302, 303) and response.headers["location"].startswith(("/", self.base_url)):
            response = await self.get(response.headers["location"])
        return response

    async def authorize(
        self, url: str, *, username: str, password: str, decision: str = "allow", sign_in: SignIn | None = None
    ) -> httpx.Response:
        """Runs a whole authorization: sign in if asked (with `sign_in`, else the password form), consent if asked.
        Returns the redirect to the client."""
        response = await self.follow_to_client(await self.get(url))
        if response.status_code == 200 and "password" in response.text and _LOGIN_FORM.search(response.text):
            if sign_in is not None:
                response = await sign_in(self, response)
            else:
                response = await self.submit(response, {"username": username, "password": password})
            assert response.status_code == 303, f"sign-in failed: {response.status_code} {response.text[:300]}"
            response = await self.follow_to_client(response)
        if response.status_code == 200 and 'name="decision"' in response.text:
            response = await self.submit(response, {"decision": decision})
        return response
