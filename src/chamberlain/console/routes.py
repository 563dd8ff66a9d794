"""The console's URLs, under each tenant's issuer ({issuer}/console). Every endpoint goes through access.page:
sign-in, the role check, CSRF for POSTs."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from chamberlain.console import audit, catalog, clients, figures, people
from chamberlain.console.access import CONSOLE_PATH, Viewer, not_found, page


def console_routes() -> list[BaseRoute]:
    c = CONSOLE_PATH
    return [
        Route(c, page(figures.overview, "read"), methods=["GET"]),
        Route(f"{c}/users", page(people.users), methods=["GET"]),
        Route(f"{c}/users/{{user_id}}", page(people.user), methods=["GET"]),
        Route(f"{c}/users/{{user_id}}/sessions/{{session_id}}/revoke", page(people.revoke_session), methods=["POST"]),
        Route(f"{c}/users/{{user_id}}/sign-out", page(people.sign_out_everywhere), methods=["POST"]),
        Route(f"{c}/groups", page(people.groups), methods=["GET"]),
        Route(f"{c}/clients", page(clients.clients), methods=["GET"]),
        # The revoke route first: a client id may be a URL, so the detail route's `path` would take it.
        Route(
            f"{c}/clients/{{client_id:path}}/consents/{{consent_id}}/revoke",
            page(clients.revoke_consent),
            methods=["POST"],
        ),
        Route(f"{c}/clients/{{client_id:path}}", page(clients.client), methods=["GET"]),
        Route(f"{c}/servers", page(catalog.servers), methods=["GET"]),
        Route(f"{c}/roles", page(catalog.roles), methods=["GET"]),
        Route(f"{c}/roles", page(catalog.save_roles), methods=["POST"]),
        Route(f"{c}/roles/edit", page(catalog.edit_roles), methods=["GET"]),
        Route(f"{c}/roles/preview", page(catalog.preview_roles), methods=["POST"]),
        Route(f"{c}/audit", page(audit.audit, "read"), methods=["GET"]),
        Route(f"{c}/audit/export", page(audit.export, "read"), methods=["GET"]),
        Route(f"{c}/audit/verify", page(audit.verify), methods=["POST"]),
        Route(f"{c}/audit/{{event_id}}", page(audit.event, "read"), methods=["GET"]),
        Route(f"{c}/cost", page(figures.cost, "read"), methods=["GET"]),
        Route(f"{c}/vault", page(catalog.vault), methods=["GET"]),
        Route(f"{c}/dlp", page(catalog.dlp), methods=["GET"]),
        # Anything else under the console: 403 for those without access, as every console URL; else a 404 page.
        Route(f"{c}/{{rest:path}}", page(_nothing, "read"), methods=["GET", "POST"]),
    ]


async def _nothing(request: Request, viewer: Viewer) -> Response:
    raise not_found()
