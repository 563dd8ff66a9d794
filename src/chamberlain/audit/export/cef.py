"""Audit events in ArcSight Common Event Format (CEF) 0, the line most SIEMs parse out of syslog.

`CEF:0|Chamberlain|Chamberlain|<version>|<action>|<summary>|<severity 0-10>|<key=value ...>`, with the escaping
rules of the CEF specification ("Implementing ArcSight CEF", rev. 25, "Character encoding"): in the header, `\\`
and `|`; in extension values, `\\`, `=` and line breaks (as `\\n` and `\\r`). Line breaks are escaped in the header
too, so a record is always one line. `externalId` is the event id, for de-duplication.
"""

from __future__ import annotations

import json
from typing import Any

from chamberlain import __version__
from chamberlain.audit.export.ocsf import describe, severity_id
from chamberlain.audit.records import StoredEvent

# OCSF severity_id (1 Informational … 6 Fatal) to CEF's 0-10 scale (0-3 low, 4-6 medium, 7-8 high, 9-10 very high).
_CEF_SEVERITY = {0: 0, 1: 1, 2: 3, 3: 5, 4: 7, 5: 9, 6: 10}
_HEADER_ESCAPES = str.maketrans({"\\": "\\\\", "|": "\\|", "\n": "\\n", "\r": "\\r"})
_VALUE_ESCAPES = str.maketrans({"\\": "\\\\", "=": "\\=", "\n": "\\n", "\r": "\\r"})


def escape_header(value: str) -> str:
    return value.translate(_HEADER_ESCAPES)


def escape_value(value: str) -> str:
    return value.translate(_VALUE_ESCAPES)


def to_cef(event: StoredEvent) -> str:
    header = [
        "Chamberlain",
        "Chamberlain",
        __version__,
        event.action,
        describe(event),
        str(_CEF_SEVERITY[severity_id(event)]),
    ]
    extension = " ".join(f"{key}={escape_value(value)}" for key, value in _extension(event).items())
    return "CEF:0|" + "|".join(escape_header(field) for field in header) + "|" + extension


def _extension(event: StoredEvent) -> dict[str, str]:
    """CEF dictionary keys where one fits; the rest in the custom string fields cs1-cs6, each with its label."""
    public = event.public
    actor = public.get("actor") or {}
    personal = event.personal or {}
    fields: dict[str, Any] = {
        "rt": str(int(event.time * 1000)),  # deviceReceiptTime, milliseconds since the epoch
        "externalId": event.event_id,
        "outcome": event.outcome,
        "reason": public.get("reason"),
        "suid": actor.get("id"),
        "suser": personal.get("username"),
        "src": personal.get("source_ip"),
        "cn1Label": "sequence",
        "cn1": str(event.seq),
    }
    custom = (
        ("tenant", event.tenant),
        ("classification", event.classification),
        ("actorType", actor.get("type")),
        ("target", public.get("target")),
        ("requestId", public.get("request_id")),
        ("details", _compact_json(public["details"]) if public.get("details") else None),
    )
    for number, (label, value) in enumerate(custom, start=1):  # fixed numbers: cs4 is always the target
        if value:
            fields[f"cs{number}Label"] = label
            fields[f"cs{number}"] = value
    return {key: str(value) for key, value in fields.items() if value}


def _compact_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
