"""Classification rules (the `classification_rules` of the audit issue): a regex `pattern` matched against resource
URIs, tool names and content gives that content the rule's classification.

Rules are written by administrators, so they run under the `regex` module's time limit: a pattern that backtracks
catastrophically on some input cannot hang the request; the input is then treated as restricted (fail closed).
Rules whose classification is not one of the four levels only drive audit retention and are ignored here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import regex

from chamberlain.audit.settings import ClassificationRule
from chamberlain.dlp.levels import LEVEL_NAMES, Level

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RuleMatch:
    level: Level
    failed: bool = False  # a rule timed out or failed: the level is restricted by default


_NOTHING = RuleMatch(Level.PUBLIC)


class ContentRules:
    def __init__(self, rules: Iterable[ClassificationRule], *, timeout: float) -> None:
        chosen = [rule for rule in rules if rule.classification.lower() in LEVEL_NAMES]
        # Highest level first: once one matches, lower rules cannot raise the result.
        chosen.sort(key=lambda rule: Level.parse(rule.classification), reverse=True)
        self._rules = [(regex.compile(rule.pattern), Level.parse(rule.classification)) for rule in chosen]
        self._timeout = timeout
        self.external: frozenset[Level] = frozenset(
            Level.parse(rule.classification) for rule in chosen if rule.external_lookup
        )

    def __bool__(self) -> bool:
        return bool(self._rules)

    def level_of(self, texts: Sequence[str]) -> RuleMatch:
        """The highest level any rule gives to any of the texts (names, URIs, content)."""
        for pattern, level in self._rules:
            for text in texts:
                try:
                    found = pattern.search(text, timeout=self._timeout)
                except TimeoutError:
                    logger.warning("classification rule %r timed out: content treated as restricted", pattern.pattern)
                    return RuleMatch(Level.RESTRICTED, failed=True)
                if found is not None:
                    return RuleMatch(level)
        return _NOTHING
