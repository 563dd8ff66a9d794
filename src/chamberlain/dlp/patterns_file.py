"""Custom patterns, `pii_patterns.json`: an organisation's own identifiers (employee numbers, project code names...).

The file is a JSON list of patterns, or an object {"patterns": [...]}. Each pattern:
    name            the entity type it reports (lower case, digits and "_"; not a built-in type's name)
    regex           a regular expression in the `regex` module's syntax (a superset of Python's `re`)
    validator       optional check on the match: "luhn", "mod97" (ISO 7064 MOD 97-10, IBAN style) or "verhoeff"
    classification  the level of what it finds (default "confidential")
    action          allow, redact, block or alert (default "alert")
    score           confidence 0..1 (default 0.8), which decides between overlapping detections

Every error names the file, the entry (index and name) and the key at fault; never the regex's subject text.
See examples/pii_patterns.json.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chamberlain.dlp.config import EntityType
from chamberlain.dlp.detection import Action
from chamberlain.dlp.detectors.custom import RegexError, compile_custom
from chamberlain.dlp.detectors.registry import BUILTIN_TYPES
from chamberlain.dlp.levels import LevelName

__all__ = ["CustomPattern", "PatternsFileError", "load_patterns"]


class PatternsFileError(ValueError):
    """pii_patterns.json cannot be used; the message says where."""


class CustomPattern(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: EntityType
    regex: str = Field(min_length=1, max_length=4096)
    validator: Literal["luhn", "mod97", "verhoeff"] | None = None
    classification: LevelName = "confidential"
    action: Action = "alert"
    score: float = Field(0.8, ge=0.0, le=1.0)

    @field_validator("name")
    @classmethod
    def _not_builtin(cls, name: str) -> str:
        if name in BUILTIN_TYPES:
            raise ValueError(f"{name!r} is a built-in detector's type: configure it under dlp.detectors instead")
        return name

    @field_validator("regex")
    @classmethod
    def _compiles(cls, source: str) -> str:
        try:
            compile_custom(source)
        except RegexError as error:
            raise ValueError(f"not a valid regular expression: {error}") from None
        return source


def load_patterns(path: Path) -> tuple[CustomPattern, ...]:
    """The patterns in `path`; PatternsFileError naming the file, the entry and the key when anything is wrong."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise PatternsFileError(f"{path}: cannot read: {error.strerror or error}") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise PatternsFileError(f"{path}: not JSON: {error}") from None
    entries = _entries(path, document)
    patterns = [_pattern(path, index, entry) for index, entry in enumerate(entries)]
    seen: set[str] = set()
    for index, pattern in enumerate(patterns):
        if pattern.name in seen:
            raise PatternsFileError(f"{path}: pattern #{index} ({pattern.name}): name: defined twice")
        seen.add(pattern.name)
    return tuple(patterns)


def _entries(path: Path, document: Any) -> Sequence[Any]:
    if isinstance(document, dict):
        unknown = sorted(set(document) - {"patterns"})
        if unknown:
            raise PatternsFileError(f"{path}: unknown key {unknown[0]!r}: the object holds only 'patterns'")
        document = document.get("patterns")
    if not isinstance(document, list):
        raise PatternsFileError(f"{path}: expected a list of patterns, or an object with a 'patterns' list")
    return document


def _pattern(path: Path, index: int, entry: Any) -> CustomPattern:
    label = f"pattern #{index}"
    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
        label += f" ({entry['name']})"
    try:
        return CustomPattern.model_validate(entry)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"]) or "(entry)"
        raise PatternsFileError(f"{path}: {label}: {key}: {first['msg']}") from None
