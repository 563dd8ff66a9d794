"""Labels an upstream puts on what it returns: Microsoft Purview sensitivity labels on SharePoint and OneDrive
items, Confluence classifications, or a plain `classification` field, read from an item or its `_meta`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chamberlain.dlp.config import SourceLabels
from chamberlain.dlp.levels import Level


class LabelReader:
    def __init__(self, labels: SourceLabels) -> None:
        self._fields = labels.fields
        self._names = {name.lower(): Level.parse(level) for name, level in labels.names.items()}

    def level_of(self, item: Mapping[str, Any]) -> Level | None:
        """The highest level among the labels found on `item` itself and in its `_meta`; None when unlabelled.
        A label whose name is not in the map counts as restricted: an unknown label is no licence to share."""
        found: Level | None = None
        meta = item.get("_meta")
        for holder in (item, meta) if isinstance(meta, Mapping) else (item,):
            for field in self._fields:
                if field in holder:
                    level = self._level(holder[field])
                    found = level if found is None else max(found, level)
        return found

    def _level(self, label: Any) -> Level:
        if isinstance(label, Mapping):  # {"name": …} or Microsoft Graph's {"displayName": …, "labelId": …}
            label = label.get("displayName", label.get("name", label.get("label")))
        if isinstance(label, str):
            return self._names.get(label.strip().lower(), Level.RESTRICTED)
        return Level.RESTRICTED
