"""Rendering the few HTML pages (login, consent, messages) with the headers every such page needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.responses import HTMLResponse

_environment = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    auto_reload=False,
)

STATIC_DIR = Path(__file__).parent / "static"


def page_headers(form_targets: tuple[str, ...] = ()) -> dict[str, str]:
    """Security headers for HTML pages.

    `form-action` must also allow the client's redirect origin: browsers apply it to the redirect that follows a
    form submission, and the consent form ends in a redirect to the client.
    """
    form_action = " ".join(("'self'", *form_targets))
    return {
        "Content-Security-Policy": (
            "default-src 'none'; style-src 'self'; img-src 'self'; "
            f"form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def render(
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    form_targets: tuple[str, ...] = (),
) -> HTMLResponse:
    html = _environment.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=page_headers(form_targets))


def message_page(heading: str, message: str, *, status_code: int, is_error: bool = True) -> HTMLResponse:
    return render(
        "message.html",
        {"heading": heading, "message": message, "is_error": is_error},
        status_code=status_code,
    )
