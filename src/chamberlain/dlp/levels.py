"""Confidentiality levels, ordered: public < internal < confidential < restricted."""

from __future__ import annotations

from enum import IntEnum
from typing import Literal, get_args

LevelName = Literal["public", "internal", "confidential", "restricted"]
LEVEL_NAMES: tuple[LevelName, ...] = get_args(LevelName)


class Level(IntEnum):
    PUBLIC = 0
    INTERNAL = 1
    CONFIDENTIAL = 2
    RESTRICTED = 3

    @property
    def label(self) -> LevelName:
        return LEVEL_NAMES[self.value]

    @classmethod
    def parse(cls, name: str) -> Level:
        """The level named `name` (any case); ValueError naming the valid levels otherwise."""
        try:
            return cls(LEVEL_NAMES.index(name.strip().lower()))
        except ValueError:
            raise ValueError(f"unknown classification {name!r}: use one of {', '.join(LEVEL_NAMES)}") from None
