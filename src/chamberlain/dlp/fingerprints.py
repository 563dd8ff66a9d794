"""Recognising content the gateway delivered at confidential or above when it comes back as arguments.

Exfiltration rarely carries a credit card number: it carries the text of a confidential document, fetched from an
internal tool and pasted by the model into an external one. Detectors cannot see that; a fingerprint can. Every
text the gateway delivers at confidential or above is cut into overlapping runs of `SHINGLE_WORDS` words
(w-shingling, Broder 1997); each run's hash is remembered with its level for a while. Arguments sent to an external
server or tool are cut the same way, and any run seen before gives them that level.

Per process and in memory: on several replicas a fingerprint is known to the replica that delivered the content.
The hashes are Python's salted string hashes, so what is kept cannot be reversed or compared across processes.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict

from chamberlain.dlp.levels import Level

SHINGLE_WORDS = 8  # long enough that common phrases do not match, short enough for a pasted sentence
MIN_CHARACTERS = 24  # a text with fewer words than a shingle is remembered whole when it is at least this long
_WORDS = re.compile(r"\w+")


def _shingles(text: str) -> set[int]:
    words = _WORDS.findall(text.lower())
    if len(words) < SHINGLE_WORDS:
        whole = " ".join(words)
        return {hash(whole)} if len(whole) >= MIN_CHARACTERS else set()
    return {hash(" ".join(words[index : index + SHINGLE_WORDS])) for index in range(len(words) - SHINGLE_WORDS + 1)}


class Fingerprints:
    """One tenant's fingerprints, bounded: the oldest are forgotten first."""

    def __init__(self, *, ttl: float, max_entries: int = 1_000_000) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._seen: OrderedDict[int, tuple[Level, float]] = OrderedDict()

    def remember(self, text: str, level: Level) -> None:
        if level < Level.CONFIDENTIAL or self._ttl <= 0:
            return
        expires = time.monotonic() + self._ttl
        seen = self._seen
        for shingle in _shingles(text):
            known = seen.pop(shingle, None)
            seen[shingle] = (max(level, known[0]) if known else level, expires)
        while len(seen) > self._max_entries:
            seen.popitem(last=False)

    def level_of(self, text: str) -> Level | None:
        """The highest level of delivered content that `text` repeats a run of words from; None when none."""
        if not self._seen:
            return None
        now = time.monotonic()
        found: Level | None = None
        for shingle in _shingles(text):
            known = self._seen.get(shingle)
            if known is not None and known[1] > now:
                found = known[0] if found is None else max(found, known[0])
        return found
