"""Values assigned to keys with a telling name: `password=...`, `"api_key": "..."`, `secret_key: ...`, `TOKEN => ...`.

Shared by the detectors of secrets that have no prefix of their own (an AWS secret access key, any high-entropy
password). Keywords are found with `str.find` on an ASCII-lowered copy of the text (memchr speed, where one
case-insensitive alternation would try every position), then the rest of the key and the assignment operator are
matched from there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Assignment", "ascii_lower", "assignments"]

# The rest of the key's name (DB_PASSWORD_PROD, secret_access_key), an optional closing quote, then ":", "=", "=>"
# or ":=", and an optional opening quote. Bounded repetitions only.
_KEY_REST_AND_OPERATOR = re.compile(r"[\w.-]{0,24}?(?P<key_end>)[\"']?[ \t]*(?::=|=>|[:=])[ \t]*[\"']?")


@dataclass(frozen=True, slots=True)
class Assignment:
    keyword: int  # where the keyword starts
    key_end: int  # where the key's name ends
    value: int  # where the value starts


def ascii_lower(text: str) -> str:
    """`text` with ASCII letters lowered and every other character kept in place (as "?" if not ASCII).

    str.lower() may change a text's length ("İ" lowers to two characters), which would shift every offset."""
    return text.encode("ascii", "replace").lower().decode("ascii")


def assignments(text: str, lowered: str, keywords: tuple[str, ...]) -> Iterator[Assignment]:
    """Each place where a key containing one of `keywords` (lower case) is assigned a value, in order."""
    keyword_ends: dict[int, int] = {}
    for keyword in keywords:
        at = lowered.find(keyword)
        while at >= 0:
            keyword_ends.setdefault(at, at + len(keyword))
            at = lowered.find(keyword, at + 1)
    last_value = -1
    for start in sorted(keyword_ends):
        match = _KEY_REST_AND_OPERATOR.match(text, keyword_ends[start])
        if match is not None and match.end() > last_value:
            last_value = match.end()
            yield Assignment(start, match.end("key_end"), match.end())
