"""Prices as data: USD per million tokens for each model, dated, from pricing.yaml and an operator's override file.

pricing.yaml (next to this module) holds the defaults for current Claude models and documents the format. A file
named by `llm.pricing_file` is read over it: each model it names replaces that model's entry (ids and aliases it
claims take precedence), and the top-level values it sets replace the defaults'. Mistakes are reported with the
key, the file and the line, by the settings loader's own machinery.

Prices change by appending an entry with a later `effective_from`: a request is priced by the entry in force at
its time, so a change never rewrites what was spent before it. Arithmetic is Decimal throughout: the list cost of
a request is exact (prices per million tokens, divided out at the end).

Model ids: a request's model matches an entry by its id or one of its aliases, or else by the same without the
snapshot date the API appends (`claude-sonnet-4-5-20250929`, Vertex AI's `claude-sonnet-4-5@20250929`).
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chamberlain.cost.usage import TokenUsage
from chamberlain.settings import SettingsError, _describe, _read_yaml

DEFAULTS_FILE = Path(__file__).with_name("pricing.yaml")
MILLION = Decimal(1_000_000)
THOUSAND = Decimal(1_000)
# Anthropic's prompt-caching multipliers of the base input price, used where a price list leaves them out.
CACHE_WRITE_5M_FACTOR = Decimal("1.25")
CACHE_WRITE_1H_FACTOR = Decimal(2)
CACHE_READ_FACTOR = Decimal("0.1")
_DATE_SUFFIX = re.compile(r"[-@][0-9]{8}$")
_LOOKUP_CACHE_LIMIT = 4096  # distinct model strings remembered; unknown ones are not kept
_ALWAYS = datetime.min.replace(tzinfo=UTC)  # the start of a first price (or schedule) without effective_from

Price = Annotated[Decimal, Field(ge=0, le=100_000, description="USD per million tokens")]
Fraction = Annotated[Decimal, Field(ge=0, lt=1)]


class PricingError(SettingsError):
    """A pricing file that cannot be used, with the key, the file and the line."""


class UnknownModel(LookupError):
    """No price for this model (at this time): it cannot be costed."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _LongContext(_Strict):
    """Rates for a request whose prompt (input, cache writes and cache reads together) exceeds the threshold."""

    above_prompt_tokens: int = Field(ge=0)
    input: Price
    output: Price
    cache_write_5m: Price | None = None
    cache_write_1h: Price | None = None
    cache_read: Price | None = None


class _PriceEntry(_Strict):
    effective_from: datetime | None = Field(None, description="UTC; unset: since always (only the first entry)")
    input: Price
    output: Price
    cache_write_5m: Price | None = None
    cache_write_1h: Price | None = None
    cache_read: Price | None = None
    long_context: _LongContext | None = None

    @field_validator("effective_from")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return _as_utc(value) if value is not None else None


class _ModelEntry(_Strict):
    aliases: tuple[str, ...] = ()
    prices: list[_PriceEntry] = Field(min_length=1)

    @model_validator(mode="after")
    def _in_order(self) -> _ModelEntry:
        starts = [entry.effective_from for entry in self.prices]
        if any(start is None for start in starts[1:]):
            raise ValueError("every price after the first needs an effective_from")
        dated = [start for start in starts if start is not None]
        if any(later <= earlier for earlier, later in itertools.pairwise(dated)):
            raise ValueError("prices must be listed oldest first, each effective_from later than the one before")
        return self


class _Tier(_Strict):
    above: Decimal = Field(ge=0, description="monthly list spend in USD beyond which the discount applies")
    discount: Fraction


class _VolumeSchedule(_Strict):
    effective_from: datetime | None = None
    # total: the discount of the highest tier reached applies to the whole month's spend; marginal: each tier's
    # discount applies to the part of the spend within that tier (no drop in the bill when a threshold is crossed).
    applies_to: Literal["total", "marginal"] = "total"
    tiers: list[_Tier] = Field(default_factory=list)

    @field_validator("effective_from")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return _as_utc(value) if value is not None else None

    @field_validator("tiers")
    @classmethod
    def _ascending(cls, tiers: list[_Tier]) -> list[_Tier]:
        if any(later.above <= earlier.above for earlier, later in itertools.pairwise(tiers)):
            raise ValueError("tiers must be listed by increasing 'above'")
        return tiers


class _PricingFile(_Strict):
    batch_discount: Fraction = Decimal("0.5")  # the Message Batches API: half price on every token
    web_search_per_1000: Price = Decimal(10)  # the web search server tool, per thousand searches
    volume_discounts: list[_VolumeSchedule] = Field(default_factory=list)
    models: dict[str, _ModelEntry] = Field(default_factory=dict)

    @field_validator("models")
    @classmethod
    def _ids_unique(cls, models: dict[str, _ModelEntry]) -> dict[str, _ModelEntry]:
        owner: dict[str, str] = {model: model for model in models}
        for model, entry in models.items():
            for alias in entry.aliases:
                if owner.setdefault(alias, model) != model:
                    raise ValueError(f"'{alias}' names both '{owner[alias]}' and '{model}'")
        return models

    @field_validator("volume_discounts")
    @classmethod
    def _schedules_in_order(cls, schedules: list[_VolumeSchedule]) -> list[_VolumeSchedule]:
        starts = [schedule.effective_from or _ALWAYS for schedule in schedules]
        if any(later <= earlier for earlier, later in itertools.pairwise(starts)):
            raise ValueError("schedules must be listed oldest first, each effective_from later than the one before")
        return schedules


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens, every kind spelt out."""

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal

    @classmethod
    def of(cls, entry: _PriceEntry | _LongContext) -> Rates:
        return cls(
            entry.input,
            entry.output,
            entry.input * CACHE_WRITE_5M_FACTOR if entry.cache_write_5m is None else entry.cache_write_5m,
            entry.input * CACHE_WRITE_1H_FACTOR if entry.cache_write_1h is None else entry.cache_write_1h,
            entry.input * CACHE_READ_FACTOR if entry.cache_read is None else entry.cache_read,
        )

    def tokens_cost(self, usage: TokenUsage) -> Decimal:
        per_million = (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_creation_5m_input_tokens * self.cache_write_5m
            + usage.cache_creation_1h_input_tokens * self.cache_write_1h
            + usage.cache_read_input_tokens * self.cache_read
        )
        return per_million / MILLION


@dataclass(frozen=True, slots=True)
class _Period:
    standard: Rates
    long_context: Rates | None
    long_context_above: int

    def rates_for(self, prompt_tokens: int) -> Rates:
        if self.long_context is not None and prompt_tokens > self.long_context_above:
            return self.long_context
        return self.standard


class _ModelPrices:
    __slots__ = ("name", "periods", "starts")

    def __init__(self, name: str, entry: _ModelEntry) -> None:
        self.name = name
        self.starts = [(price.effective_from or _ALWAYS) for price in entry.prices]
        self.periods = [
            _Period(
                Rates.of(price),
                Rates.of(price.long_context) if price.long_context is not None else None,
                price.long_context.above_prompt_tokens if price.long_context is not None else 0,
            )
            for price in entry.prices
        ]

    def at(self, at: datetime) -> _Period:
        index = bisect.bisect_right(self.starts, _as_utc(at)) - 1
        if index < 0:
            raise UnknownModel(f"no price for {self.name} before {self.starts[0].date().isoformat()}")
        return self.periods[index]


class Pricing:
    def __init__(self, prices: _PricingFile) -> None:
        self._file = prices
        self._models: dict[str, _ModelPrices] = {}
        for name, entry in prices.models.items():
            model = _ModelPrices(name, entry)
            self._models[name] = model
            for alias in entry.aliases:
                self._models[alias] = model
        self._found: dict[str, _ModelPrices] = {}
        schedules = prices.volume_discounts
        self._volume_starts = [schedule.effective_from or _ALWAYS for schedule in schedules]

    @classmethod
    def load(cls, path: Path | None = None) -> Pricing:
        """The defaults, overlaid by the file at `path` if given. Raises PricingError."""
        defaults = _defaults()
        if path is None:
            return cls(defaults)
        override = _read(path)
        merged = defaults.model_copy(
            update={
                **{key: getattr(override, key) for key in override.model_fields_set if key != "models"},
                "models": _overlaid(defaults.models, override.models),
            }
        )
        return cls(merged)

    @property
    def models(self) -> tuple[str, ...]:
        """The priced models' ids (without aliases)."""
        return tuple(self._file.models)

    def knows(self, model: str) -> bool:
        return self._lookup(model) is not None

    def cost(self, model: str, usage: TokenUsage, *, at: datetime, batch: bool = False) -> Decimal:
        """The list cost in USD of one request, at the prices in force at `at`. Raises UnknownModel."""
        period = self._prices(model).at(at)
        tokens = period.rates_for(usage.prompt_tokens).tokens_cost(usage)
        if batch:
            tokens *= 1 - self._file.batch_discount
        return tokens + usage.web_search_requests * self._file.web_search_per_1000 / THOUSAND

    def estimate(self, model: str, input_tokens: int, max_output_tokens: int, *, at: datetime) -> Decimal:
        """An upper bound of a request's list cost before it runs (what a budget reserves): every input token at
        the dearest input rate (a one-hour cache write) and every allowed output token. Raises UnknownModel."""
        rates = self._prices(model).at(at).rates_for(input_tokens)
        dearest = max(rates.input, rates.cache_write_5m, rates.cache_write_1h, rates.cache_read)
        return (input_tokens * dearest + max_output_tokens * rates.output) / MILLION

    def volume_discount(self, monthly_spend: Decimal, *, at: datetime) -> Decimal:
        """The discount in USD on a month's list spend, by the volume tiers in force at `at`."""
        index = bisect.bisect_right(self._volume_starts, _as_utc(at)) - 1
        if index < 0 or monthly_spend <= 0:
            return Decimal(0)
        schedule = self._file.volume_discounts[index]
        if schedule.applies_to == "total":
            reached = [tier for tier in schedule.tiers if monthly_spend > tier.above]
            return monthly_spend * reached[-1].discount if reached else Decimal(0)
        discount = Decimal(0)
        ceilings = [tier.above for tier in schedule.tiers[1:]] + [monthly_spend]
        for tier, ceiling in zip(schedule.tiers, ceilings, strict=True):
            within = min(monthly_spend, ceiling) - tier.above
            if within > 0:
                discount += within * tier.discount
        return discount

    def _prices(self, model: str) -> _ModelPrices:
        found = self._lookup(model)
        if found is None:
            raise UnknownModel(f"no price for model {model!r}")
        return found

    def _lookup(self, model: str) -> _ModelPrices | None:
        found = self._found.get(model)
        if found is not None:
            return found
        found = self._models.get(model) or self._models.get(_DATE_SUFFIX.sub("", model))
        if found is not None:
            if len(self._found) >= _LOOKUP_CACHE_LIMIT:
                self._found.clear()
            self._found[model] = found
        return found


def _overlaid(defaults: Mapping[str, _ModelEntry], override: Mapping[str, _ModelEntry]) -> dict[str, _ModelEntry]:
    """The defaults with the override's models replacing theirs; a default model's alias that the override claims
    for one of its own is taken away from the default."""
    claimed = {name for name in override} | {alias for entry in override.values() for alias in entry.aliases}
    kept = {
        name: entry.model_copy(update={"aliases": tuple(alias for alias in entry.aliases if alias not in claimed)})
        for name, entry in defaults.items()
        if name not in claimed
    }
    return {**kept, **override}


@functools.cache
def _defaults() -> _PricingFile:
    return _read(DEFAULTS_FILE)


def _read(path: Path) -> _PricingFile:
    try:
        values, origins = _read_yaml(path)
    except SettingsError as problem:
        raise PricingError(str(problem)) from None
    try:
        return _PricingFile.model_validate(values)
    except ValidationError as problem:
        raise PricingError(_describe(problem, values, origins)) from None


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
