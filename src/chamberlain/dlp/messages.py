"""Data protection on messages: MCP results kept within the caller's clearance item by item, detector actions
applied to what passes, and the external lookup gate on what is sent to external servers and tools and, when a
tenant asks, to the LLM API.

Results (tools/call, resources/read, prompts/get) are judged item by item, so a search result list keeps what the
caller may see: each item of `content` / `contents` / `messages`, and each object in a list of `structuredContent`
(the usual shape of search results), is classified by the highest of the server's declared level, labels on the
result and on the item, the classification rules (on the tool name, the item's URI and its text) and the detectors.
An item above the caller's clearance, or holding something a `block` action covers, is withheld, and a text item
says how many were. Items at confidential or above that are delivered are fingerprinted (fingerprints.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from chamberlain.dlp.detection import Detection
from chamberlain.dlp.engine import DlpEngine, Inspection
from chamberlain.dlp.levels import Level

Clearance = Callable[[Level], bool]
META_KEY = "io.chamberlain/dlp"
# Keys whose values are not text to read: binary payloads (base64 images, audio, blobs) and metadata (labels are
# read from `_meta` by the label reader; the rest of it is the protocol's, not content).
_NOT_CONTENT = frozenset({"_meta", "data", "blob", "mimeType", "type", "annotations"})
_ITEM_LISTS = {"tools/call": "content", "resources/read": "contents", "prompts/get": "messages"}


@dataclass(slots=True)
class Outcome:
    """What data protection did to one message."""

    level: Level = Level.PUBLIC
    withheld: int = 0  # items above the caller's clearance
    blocked: int = 0  # items (or, for a request, the message) stopped by a `block` action
    redacted: int = 0
    detections: Counter[str] = field(default_factory=Counter)  # entity type -> count
    actions: set[tuple[str, str]] = field(default_factory=set)  # (entity type, action) taken
    failures: set[str] = field(default_factory=set)  # detectors that failed (the content counted as restricted)
    sources: set[str] = field(default_factory=set)
    changed: bool = False
    refusal: str | None = None  # for a request: why it must not go upstream

    def __bool__(self) -> bool:
        return bool(self.withheld or self.blocked or self.detections or self.failures or self.refusal)

    def alerted(self) -> bool:
        return any(action == "alert" for _, action in self.actions)

    def _note(self, inspection: Inspection) -> None:
        self.level = max(self.level, inspection.level)
        self.sources |= inspection.sources
        for failure in inspection.failures:
            self.failures.add(failure.detector)
        for _, detection in inspection.detections:
            self.detections[detection.type] += 1
            self.actions.add((detection.type, detection.action))


def _strings(value: Any, holder: Any = None, key: Any = None) -> Iterator[tuple[Any, Any, str]]:
    """Every text leaf under `value` as (its container, its key or index, the text)."""
    if isinstance(value, str):
        yield holder, key, value
    elif isinstance(value, dict):
        for name, child in value.items():
            if name not in _NOT_CONTENT:
                yield from _strings(child, value, name)
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _strings(child, value, index)


class _Judge:
    def __init__(self, engine: DlpEngine, outcome: Outcome, clearance: Clearance, base: Level, names: tuple[str, ...]):
        self.engine = engine
        self.outcome = outcome
        self.clearance = clearance
        self.base = base
        self.names = names

    def keeps(self, item: Any) -> bool:
        """Whether `item` may be delivered; applies the redactions it needs when it may."""
        leaves = list(_strings(item))
        uri = item.get("uri") if isinstance(item, dict) else None
        names = (*self.names, uri) if isinstance(uri, str) else self.names
        inspection = self.engine.inspect([text for _, _, text in leaves], names)
        if isinstance(item, dict):
            for labelled in (item, item.get("resource")):
                if isinstance(labelled, dict):
                    inspection.raise_to(self.engine.labels.level_of(labelled), "label")
        inspection.raise_to(self.base, "server")
        self.outcome._note(inspection)
        delivered = inspection.sent.level  # what is redacted is not delivered
        if not self.clearance(delivered):
            self.outcome.withheld += 1
            return False
        if any(detection.action == "block" for _, detection in inspection.detections):
            self.outcome.blocked += 1
            return False
        _redact(self.engine, leaves, inspection, self.outcome)
        if delivered >= Level.CONFIDENTIAL:
            for holder, key, _ in leaves:
                self.engine.fingerprints.remember(holder[key], delivered)
        return True

    def filtered(self, items: list[Any]) -> list[Any]:
        return [item for item in items if self.keeps(item)]


def _redact(engine: DlpEngine, leaves: list[tuple[Any, Any, str]], inspection: Inspection, outcome: Outcome) -> None:
    by_leaf: dict[int, list[Detection]] = {}
    for index, detection in inspection.detections:
        if detection.action == "redact":
            by_leaf.setdefault(index, []).append(detection)
    for index, detections in by_leaf.items():
        holder, key, text = leaves[index]
        holder[key] = engine.redacted(text, detections)
        outcome.redacted += len(detections)
        outcome.changed = True


def guard_result(
    engine: DlpEngine, response: dict[str, Any], method: str, *, clearance: Clearance, declared: Level, tool: str | None
) -> Outcome:
    """Applies data protection to one JSON-RPC response's result in place (see the module docstring)."""
    outcome = Outcome()
    result = response.get("result")
    if not isinstance(result, dict):
        return outcome
    base = max(declared, engine.labels.level_of(result) or Level.PUBLIC)
    judge = _Judge(engine, outcome, clearance, base, (tool,) if tool else ())
    if method == "resources/list":
        listed = result.get("resources")
        if isinstance(listed, list):
            kept = judge.filtered(listed)
            if len(kept) != len(listed):
                result["resources"] = kept
                outcome.changed = True
        return outcome
    items_key = _ITEM_LISTS.get(method)
    items = result.get(items_key) if items_key else None
    if isinstance(items, list):
        kept = judge.filtered(items)
        if len(kept) != len(items):
            result[items_key] = kept
            outcome.changed = True
    if "structuredContent" in result:
        # The structured copy holds the same items as `content`: counted once, as whichever lost more.
        withheld, blocked = outcome.withheld, outcome.blocked
        outcome.withheld = outcome.blocked = 0
        _guard_structured(judge, result)
        outcome.withheld, outcome.blocked = max(withheld, outcome.withheld), max(blocked, outcome.blocked)
    if outcome.withheld or outcome.blocked:
        _tell(result, items_key, outcome)
    return outcome


def _guard_structured(judge: _Judge, result: dict[str, Any]) -> None:
    """Lists of objects in structuredContent (search results, rows) are judged object by object; the rest of it as
    one item, which, if it may not be delivered, takes structuredContent away whole."""
    structured = result["structuredContent"]
    if isinstance(structured, list):
        result["structuredContent"] = judge.filtered(structured)
    elif isinstance(structured, dict):
        rest: dict[str, Any] = {}
        for key, value in structured.items():
            if isinstance(value, list) and value and all(isinstance(element, dict) for element in value):
                structured[key] = judge.filtered(value)
            else:
                rest[key] = value
        if rest and not judge.keeps(rest):
            del result["structuredContent"]
        else:
            structured.update(rest)  # redactions were applied to `rest`'s values
    elif not judge.keeps({"value": structured}):
        del result["structuredContent"]
    if judge.outcome.withheld or judge.outcome.blocked:
        judge.outcome.changed = True


def _tell(result: dict[str, Any], items_key: str | None, outcome: Outcome) -> None:
    parts = []
    if outcome.withheld:
        parts.append(f"{outcome.withheld} classified above your clearance")
    if outcome.blocked:
        parts.append(f"{outcome.blocked} blocked by a data protection rule")
    note = "Chamberlain withheld part of this result: " + "; ".join(parts) + "."
    if items_key == "content" and isinstance(result.get("content"), list):
        result["content"].append({"type": "text", "text": note})
    meta = result.setdefault("_meta", {})
    if isinstance(meta, dict):
        meta[META_KEY] = {"withheld": outcome.withheld, "blocked": outcome.blocked}
    outcome.changed = True


def guard_outgoing(
    engine: DlpEngine, holder: dict[str, Any], key: str, *, what: str, target: str, external: bool
) -> Outcome:
    """Applies data protection to what is about to leave (`holder[key]`: a tools/call's arguments, a Messages API
    request's messages) in place; `refusal` says why it must not be sent: a `block` action, or, when `target` is
    `external`, data above the levels external servers and tools may receive."""
    outcome = Outcome()
    leaves = list(_strings(holder.get(key), holder, key))
    if not leaves:
        return outcome
    inspection = engine.inspect([text for _, _, text in leaves], fingerprints=external)
    outcome._note(inspection)
    blocked = sorted({detection.type for _, detection in inspection.detections if detection.action == "block"})
    if blocked:
        outcome.blocked = 1
        outcome.refusal = f"refused by data protection: {', '.join(blocked)} found in {what}"
        return outcome
    # What is redacted does not leave: the gate judges what would.
    sent = inspection.sent
    if external and not engine.external_permits(sent.level):
        allowed = ", ".join(level.label for level in sorted(engine.external_levels)) or "no"
        why = ", ".join(sorted(sent.sources)) or "the default classification"
        outcome.refusal = (
            f"refused by data protection: {target} is external and may receive {allowed} data only, "
            f"and {sent.level.label} data was found in {what} ({why})"
        )
        outcome.sources = set(sent.sources)
        return outcome
    _redact(engine, leaves, inspection, outcome)
    return outcome
