"""Alerts the gateway sends to a tenant's webhook, signed and retried as Standard Webhooks 1.0 says.

Any alert that fits `WebhookAlert` (budget thresholds in cost/alerts.py, DLP detections in dlp/alerts.py) goes
through one `AlertSender`. The rules come from Standard Webhooks 1.0 (standardwebhooks.com,
spec/standard-webhooks.md):
- headers `webhook-id` (the alert's id, the same on every attempt: receivers de-duplicate on it),
  `webhook-timestamp` (the attempt's time, integer seconds) and `webhook-signature` ("v1," and the base64 HMAC-SHA256,
  RFC 2104, of "{webhook-id}.{webhook-timestamp}.{body}");
- the secret is "whsec_" and the base64 of 24 to 64 random bytes, kept in the tenant's vault (the alert's
  `webhook_secret` names it as SOURCE/NAME, bound to the reserved binding of its kind of alert, store/servers.py) and
  read through `Vault.use`, so every read is audited; it lives in a `WebhookSecret`, whose repr shows nothing, and no
  message here carries it;
- the body is JSON: {"type": …, "timestamp": …, "data": {…}} (the spec's payload structure, `webhook_payload`);
- delivered when the receiver answers 2xx; a 410 Gone stops further attempts; anything else (other statuses, network
  errors, timeouts) is retried with exponential backoff and jitter, honouring Retry-After (RFC 9110 §10.2.3), up to
  `attempts` times.

Delivery is off the request path: `submit` only starts a task. Retries live in memory, so alerts still being retried
when the process stops are lost (an alert's audit event, when it has one, is recorded at once and stays). The URL is
the tenant administrator's choice, so every connection goes through net/ssrf.py's guard (public addresses only unless
the policy allows more) and redirects are not followed; plain http is refused except to loopback when allowed. Logs
name the alert's type, id and the URL without its query (a receiver's token often travels there), never the secret.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.utils
import hashlib
import hmac
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final, Literal, Protocol

import httpx

from chamberlain.audit.events import AuditEvent, new_event_id
from chamberlain.net.hosts import is_loopback_host
from chamberlain.net.ssrf import AddressPolicy, FetchError, Resolver, guarded_client

if TYPE_CHECKING:
    from chamberlain.vault.service import Vault

logger = logging.getLogger(__name__)

SECRET_PREFIX: Final = "whsec_"
_MIN_KEY, _MAX_KEY = 24, 64  # Standard Webhooks: "at least 24 bytes (192 bits, 512 maximum)"


class AuditSink(Protocol):
    def record(self, event: AuditEvent) -> None: ...


SecretReader = Callable[[str, str], Awaitable[bytes]]  # (tenant, "SOURCE/NAME") -> the stored value


class WebhookAlert(Protocol):
    """What `AlertSender` needs of an alert. Frozen dataclasses fit: the members are read-only."""

    @property
    def id(self) -> str:
        """The `webhook-id`: unique per alert, the same on every attempt, without "." (the signed separator)."""

    @property
    def event_type(self) -> str:
        """The payload's "type", e.g. "budget.threshold_crossed"; also names the alert in logs."""

    @property
    def tenant(self) -> str: ...

    @property
    def webhook(self) -> str | None:
        """The receiver's URL; None: the alert is only audited."""

    @property
    def webhook_secret(self) -> str | None:
        """SOURCE/NAME of the whsec_ signing secret in the tenant's vault."""

    def body(self) -> bytes:
        """The JSON payload, the same on every attempt (the signature covers it)."""

    def audit_event(self) -> AuditEvent | None:
        """Recorded when the alert is submitted; None when the caller audits what caused it itself."""


def new_message_id() -> str:
    """A `webhook-id`: "msg_" and a random id, with no "." (the separator of the signed content)."""
    return f"msg_{new_event_id()}"


def iso_time(timestamp: float) -> str:
    """POSIX seconds as RFC 3339 UTC with a "Z", the form of the payload's "timestamp"."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def webhook_payload(event_type: str, at: float, data: Mapping[str, object]) -> bytes:
    """The payload structure Standard Webhooks recommends: {"type", "timestamp", "data"}, compact JSON."""
    document = {"type": event_type, "timestamp": iso_time(at), "data": data}
    return json.dumps(document, separators=(",", ":")).encode()


class WebhookSecret:
    """A Standard Webhooks signing secret. Nothing about it is ever shown: not by repr, not in errors."""

    __slots__ = ("_key",)

    def __init__(self, value: bytes | str) -> None:
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        text = text.strip()
        if not text.startswith(SECRET_PREFIX):
            raise ValueError(f"a webhook secret is {SECRET_PREFIX!r} followed by base64")
        try:
            key = base64.b64decode(text[len(SECRET_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"a webhook secret is {SECRET_PREFIX!r} followed by base64") from None
        if not _MIN_KEY <= len(key) <= _MAX_KEY:
            raise ValueError(f"a webhook secret's key is {_MIN_KEY} to {_MAX_KEY} bytes")
        self._key = key

    def __repr__(self) -> str:
        return "WebhookSecret(…)"

    def signature(self, message_id: str, timestamp: int, body: bytes) -> str:
        signed = f"{message_id}.{timestamp}.".encode() + body
        return "v1," + base64.b64encode(hmac.new(self._key, signed, hashlib.sha256).digest()).decode()


def signed_headers(secret: WebhookSecret, message_id: str, body: bytes, timestamp: int) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": secret.signature(message_id, timestamp, body),
    }


def vault_secret_reader(vault: Vault, binding: str, *, purpose: str) -> SecretReader:
    """Reads webhook secrets bound to `binding` from the tenant's vault, each read audited with `purpose` (the
    gateway reads for itself: no user, no request)."""
    from chamberlain.gateway.server_config import split_vault_reference
    from chamberlain.vault.backend import SecretRef

    async def read(tenant: str, reference: str) -> bytes:
        source, name = split_vault_reference(reference)
        return await vault.use(tenant, binding, None, None, SecretRef(tenant, source, name), purpose=purpose)

    return read


class AlertSender:
    """Records each alert's audit event and delivers its webhook in a task of its own (see the module docstring)."""

    def __init__(
        self,
        secrets: SecretReader,
        *,
        resolver: Resolver,
        policy: AddressPolicy,
        audit: AuditSink | None = None,
        allow_http_loopback: bool = False,
        timeout: float = 15.0,
        attempts: int = 8,
        first_delay: float = 1.0,
        max_delay: float = 600.0,
        max_pending: int = 1000,
        concurrency: int = 4,
    ) -> None:
        self._secrets = secrets
        self._audit = audit
        self._allow_http_loopback = allow_http_loopback
        self._attempts = attempts
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._max_pending = max_pending
        self._client = guarded_client(resolver=resolver, policy=policy, timeout=timeout)
        self._sending = asyncio.Semaphore(concurrency)  # requests at once; waiting between attempts holds none
        self._tasks: set[asyncio.Task[None]] = set()
        self.delivered = 0
        self.failed = 0  # given up (attempts exhausted, 410, or a refused URL or secret)

    def submit(self, alert: WebhookAlert) -> None:
        """Never raises, never waits: the audit event (if any) is queued, the delivery runs in its own task."""
        if self._audit is not None and (event := alert.audit_event()) is not None:
            self._audit.record(event)
        if alert.webhook is None:
            return
        if len(self._tasks) >= self._max_pending:
            self.failed += 1
            logger.error(
                "%s alert %s not sent: %d deliveries are pending already", alert.event_type, alert.id, len(self._tasks)
            )
            return
        task = asyncio.get_running_loop().create_task(self._deliver(alert), name=f"webhook-{alert.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drained(self) -> None:
        """Waits until every delivery submitted so far has succeeded or been given up (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Stops pending deliveries (audited alerts stay in the audit log) and closes the HTTP client."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if tasks:
            logger.warning("%d alert webhook(s) still pending were dropped at shutdown", len(tasks))
        await self._client.aclose()

    # -- one delivery -------------------------------------------------------------------------------------------

    async def _deliver(self, alert: WebhookAlert) -> None:
        assert alert.webhook is not None
        target = _loggable(alert.webhook)
        problem = self._url_problem(alert.webhook)
        if problem is not None:
            self._give_up(alert, target, problem)
            return
        try:
            if alert.webhook_secret is None:
                raise ValueError("the alert names no webhook secret")
            secret = WebhookSecret(await self._secrets(alert.tenant, alert.webhook_secret))
        except Exception as error:  # a vault refusal or a malformed value: its class says enough
            self._give_up(alert, target, f"no usable signing secret ({type(error).__name__})")
            return
        body = alert.body()
        for attempt in range(1, self._attempts + 1):
            outcome, detail, retry_after = await self._attempt(alert.webhook, secret, alert.id, body)
            if outcome == "delivered":
                self.delivered += 1
                return
            if outcome == "gone" or attempt == self._attempts:
                self._give_up(alert, target, f"{detail} after {attempt} attempt(s)")
                return
            delay = self._delay(attempt, retry_after)
            logger.info(
                "%s alert %s to %s: attempt %d failed (%s); retrying in %.1f s",
                alert.event_type,
                alert.id,
                target,
                attempt,
                detail,
                delay,
            )
            await asyncio.sleep(delay)

    async def _attempt(
        self, url: str, secret: WebhookSecret, message_id: str, body: bytes
    ) -> tuple[Literal["delivered", "gone", "failed"], str, float | None]:
        """One POST: the outcome, what happened, and the receiver's Retry-After in seconds if it gave one."""
        headers = signed_headers(secret, message_id, body, int(time.time()))
        try:
            async with self._sending:
                response = await self._client.post(url, content=body, headers=headers)
        except (httpx.HTTPError, FetchError) as error:
            return "failed", type(error).__name__, None  # the class only: a message may quote the URL
        status = f"HTTP {response.status_code}"
        if response.is_success:
            return "delivered", status, None
        if response.status_code == 410:
            return "gone", status, None  # Standard Webhooks: the receiver wants no more
        return "failed", status, _retry_after(response)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self._max_delay)
        # Exponential backoff with jitter on the upper half: spread out, never shorter than half the step.
        step = min(self._first_delay * 2.0 ** (attempt - 1), self._max_delay)
        return step / 2 + random.uniform(0, step / 2)  # noqa: S311 - spreading retries, not secrecy

    def _url_problem(self, url: str) -> str | None:
        parsed = httpx.URL(url)
        if parsed.scheme == "https":
            return None
        if parsed.scheme == "http" and self._allow_http_loopback and is_loopback_host(parsed.host):
            return None
        return "plain http is refused (https only, or loopback when allowed)"

    def _give_up(self, alert: WebhookAlert, target: str, reason: str) -> None:
        self.failed += 1
        logger.error("%s alert %s to %s was not delivered: %s", alert.event_type, alert.id, target, reason)


def _retry_after(response: httpx.Response) -> float | None:
    """RFC 9110 §10.2.3: delay-seconds or an HTTP-date."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    with contextlib.suppress(TypeError, ValueError):
        moment: datetime = email.utils.parsedate_to_datetime(value)
        return max(0.0, moment.timestamp() - time.time())
    return None


def _loggable(url: str | httpx.URL) -> str:
    """Scheme, host and path only: a query may carry a token of the receiver's."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(query=None, fragment=None))


class _QueryOmitted(logging.Filter):
    """httpx logs every request's full URL at INFO ('HTTP Request: POST https://…?token=… "HTTP/1.1 200 OK"'), so
    a receiver's token in the query would reach the logs whenever INFO is on. This drops the query from those
    records; being on httpx's logger, it does so for every httpx client of the process."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(arg, httpx.URL) and arg.query for arg in record.args):
            record.args = tuple(_loggable(arg) if isinstance(arg, httpx.URL) else arg for arg in record.args)
        return True


logging.getLogger("httpx").addFilter(_QueryOmitted())
