"""The loopback redirect receiver of a native app (RFC 8252 §7.3): an HTTP listener on 127.0.0.1 at a port the OS
picks, waiting for one authorization response.

It listens on the IP literal, not "localhost" (RFC 8252 §8.3: a name may resolve elsewhere, and a firewall may
treat it differently). Anything on this machine can reach the port, so a response counts only when it carries the
`state` this login sent (RFC 6749 §10.12); others are answered and ignored, so that a stray or forged request can
neither inject a code nor end the login. A response naming another issuer is a mix-up attack (RFC 9207 §2.4).
"""

from __future__ import annotations

import hmac
import html
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from chamberlain.client.oauth import ClientError, OAuthFailure

CALLBACK_PATH = "/callback"
LOOPBACK_ADDRESS = "127.0.0.1"
REGISTERED_REDIRECT_URI = f"http://{LOOPBACK_ADDRESS}{CALLBACK_PATH}"  # any port matches it (RFC 8252 §7.3)
MAX_QUERY_LENGTH = 8192
# The page the browser shows: no scripts, no subresources, and the URL (which holds the code) sent to nobody.
_PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
}


class AuthorizationRefused(OAuthFailure):
    """The authorization server sent an error instead of a code (RFC 6749 §4.1.2.1)."""


class LoginTimedOut(ClientError):
    pass


@dataclass(frozen=True, slots=True)
class _Outcome:
    code: str | None = None
    failure: ClientError | None = None


class LoopbackReceiver:
    """Use as a context manager: listening from entry to exit, `redirect_uri` to send, `wait()` for the code."""

    def __init__(self, *, state: str, issuer: str, iss_required: bool) -> None:
        self._state = state
        self._issuer = issuer
        self._iss_required = iss_required
        self._outcome: _Outcome | None = None
        self._arrived = threading.Event()
        self._lock = threading.Lock()  # the listener answers each connection on its own thread
        self._server = ThreadingHTTPServer((LOOPBACK_ADDRESS, 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), daemon=True)

    @property
    def redirect_uri(self) -> str:
        return f"http://{LOOPBACK_ADDRESS}:{self._server.server_address[1]}{CALLBACK_PATH}"

    def __enter__(self) -> LoopbackReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait(self, timeout: float) -> str:
        """The authorization code; AuthorizationRefused, LoginTimedOut or a ClientError otherwise."""
        if not self._arrived.wait(timeout):
            raise LoginTimedOut(f"no sign-in arrived within {timeout:g} seconds")
        outcome = self._outcome
        assert outcome is not None
        if outcome.failure is not None:
            raise outcome.failure
        assert outcome.code is not None
        return outcome.code

    def answer(self, query: str) -> tuple[int, str]:
        """Judges one request to the callback path; returns the status and message for the browser."""
        pairs = parse_qsl(query, keep_blank_values=True) if len(query) <= MAX_QUERY_LENGTH else []
        params = dict(pairs)
        with self._lock:
            state = params.get("state", "").encode()
            if (
                not hmac.compare_digest(state, self._state.encode())
                or len(pairs) != len(params)
                or self._arrived.is_set()
            ):
                return 400, "This response does not belong to the sign-in in progress. Nothing was changed."
            outcome = self._judge(params)
            self._outcome = outcome
            self._arrived.set()
        if outcome.failure is not None:
            return 400, f"Sign-in failed: {outcome.failure}. Return to the terminal."
        return 200, "Signed in. You can close this window and return to the terminal."

    def _judge(self, params: dict[str, str]) -> _Outcome:
        iss = params.get("iss")
        if (iss is None and self._iss_required) or (iss is not None and iss != self._issuer):
            # RFC 9207 §2.4: the response must come from the issuer the request went to.
            return _Outcome(failure=ClientError("the authorization response came from another issuer; not used"))
        if "error" in params:
            return _Outcome(failure=AuthorizationRefused.from_params(params))
        code = params.get("code")
        if not code:
            return _Outcome(failure=ClientError("the authorization response carried no code"))
        return _Outcome(code=code)


def _handler_for(receiver: LoopbackReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # seconds: an idle local connection cannot hold the listener

        def do_GET(self) -> None:
            target = urlsplit(self.path)
            if target.path != CALLBACK_PATH:
                self._page(404, "Not found.")
                return
            self._page(*receiver.answer(target.query))

        def _page(self, status: int, message: str) -> None:
            body = (
                "<!doctype html><html><head><meta charset=utf-8><title>Chamberlain</title></head>"
                f"<body style='font-family:sans-serif;margin:3em'><p>{html.escape(message)}</p></body></html>"
            ).encode()
            self.send_response(status)
            for name, value in _PAGE_HEADERS.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Silent: the default writes each request line, authorization code included, to stderr."""

    return Handler
