"""Pricing as data: the built-in prices for current Claude models, ids with snapshot dates, cache lifetimes, long
context, batch, web search, price changes from their effective date, volume tiers, estimates that bound the cost,
override files merged over the defaults, and mistakes reported with the key, the file and the line."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chamberlain.cost.pricing import DEFAULTS_FILE, Pricing, PricingError, UnknownModel
from chamberlain.cost.teams import team_of
from chamberlain.cost.usage import TokenUsage
from chamberlain.settings import SettingsError

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
DEFAULTS = Pricing.load()
MILLION = TokenUsage(input_tokens=1_000_000)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pricing.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# -- the defaults ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "input_price", "output_price"),
    [
        ("claude-opus-4-6", "5", "25"),
        ("claude-opus-4-5-20251101", "5", "25"),
        ("claude-opus-4-1-20250805", "15", "75"),
        ("claude-opus-4-20250514", "15", "75"),
        ("claude-opus-4-0", "15", "75"),
        ("claude-sonnet-4-6", "3", "15"),
        ("claude-sonnet-4-5-20250929", "3", "15"),
        ("claude-sonnet-4-5@20250929", "3", "15"),  # Vertex AI's spelling
        ("claude-sonnet-4-20250514", "3", "15"),
        ("claude-haiku-4-5-20251001", "1", "5"),
        ("claude-3-5-haiku-20241022", "0.80", "4"),
        ("claude-3-5-haiku-latest", "0.80", "4"),
    ],
)
def test_default_prices_per_million_tokens(model: str, input_price: str, output_price: str) -> None:
    # A tenth of a million each, below every long-context threshold.
    assert DEFAULTS.cost(model, TokenUsage(input_tokens=100_000), at=NOW) * 10 == Decimal(input_price)
    assert DEFAULTS.cost(model, TokenUsage(output_tokens=100_000), at=NOW) * 10 == Decimal(output_price)


@pytest.mark.parametrize("model", DEFAULTS.models)
def test_default_cache_prices_follow_the_documented_multipliers(model: str) -> None:
    base = DEFAULTS.cost(model, TokenUsage(input_tokens=100_000), at=NOW)
    five_minutes = TokenUsage(cache_creation_input_tokens=100_000)
    one_hour = TokenUsage(cache_creation_input_tokens=100_000, cache_creation_1h_input_tokens=100_000)
    read = TokenUsage(cache_read_input_tokens=100_000)
    assert DEFAULTS.cost(model, five_minutes, at=NOW) == base * Decimal("1.25")
    assert DEFAULTS.cost(model, one_hour, at=NOW) == base * 2
    assert DEFAULTS.cost(model, read, at=NOW) == base * Decimal("0.1")


def test_a_dated_id_matches_its_own_entry_not_a_shorter_one() -> None:
    # claude-opus-4-1-… is Opus 4.1 ($15), never Opus 4 by prefix; and Opus 4.5 is not Opus 4.
    assert DEFAULTS.cost("claude-opus-4-5-20251101", MILLION, at=NOW) == Decimal(5)
    assert not DEFAULTS.knows("claude-opus-4-1x")
    assert not DEFAULTS.knows("claude-opus-4-5-2025")
    assert not DEFAULTS.knows("gpt-4o")
    with pytest.raises(UnknownModel, match="gpt-4o"):
        DEFAULTS.cost("gpt-4o", MILLION, at=NOW)


def test_long_context_rates_above_200k_prompt_tokens() -> None:
    # Sonnet 4.5 over 200K prompt tokens (input + cache writes + reads): $6 input, $22.50 output, cache reads at
    # 0.1 x $6. 50,000 x 6 + 200,000 x 0.6 + 2,000 x 22.5 = 465,000 / 1,000,000.
    long = TokenUsage(input_tokens=50_000, cache_read_input_tokens=200_000, output_tokens=2_000)
    assert DEFAULTS.cost("claude-sonnet-4-5", long, at=NOW) == Decimal("0.465")
    # Exactly 200,000 is not above: 0 + 200,000 x 0.3 + 2,000 x 15 = 90,000 / 1,000,000.
    at_threshold = TokenUsage(cache_read_input_tokens=200_000, output_tokens=2_000)
    assert DEFAULTS.cost("claude-sonnet-4-5", at_threshold, at=NOW) == Decimal("0.09")
    # Sonnet 4.6 has its 1M window at standard prices.
    assert DEFAULTS.cost("claude-sonnet-4-6", long, at=NOW) == Decimal("0.24")


def test_batch_halves_tokens_but_not_web_searches() -> None:
    usage = TokenUsage(input_tokens=10_000, output_tokens=2_000, web_search_requests=3)
    # Haiku 4.5: (10,000 x 1 + 2,000 x 5) / 1e6 = 0.02, halved = 0.01; three searches at $10 per thousand = 0.03.
    assert DEFAULTS.cost("claude-haiku-4-5", usage, at=NOW, batch=True) == Decimal("0.04")
    assert DEFAULTS.cost("claude-haiku-4-5", usage, at=NOW) == Decimal("0.05")


@given(
    st.integers(0, 400_000),
    st.integers(0, 400_000),
    st.integers(0, 400_000),
    st.integers(0, 100_000),
    st.sampled_from(DEFAULTS.models),
    st.data(),
)
def test_the_estimate_bounds_the_cost(
    fresh: int, written: int, read: int, output: int, model: str, data: st.DataObject
) -> None:
    one_hour = data.draw(st.integers(0, written))
    usage = TokenUsage(fresh, output, written, read, one_hour)
    prompt = fresh + written + read
    assert DEFAULTS.estimate(model, prompt, output, at=NOW) >= DEFAULTS.cost(model, usage, at=NOW)


# -- override files: effective dates, volume tiers, merging ----------------------------------------------------

OVERRIDE = """\
volume_discounts:
  - applies_to: total
    tiers:
      - {above: 10000, discount: 0.15}
      - {above: 50000, discount: 0.25}
      - {above: 100000, discount: 0.35}
  - effective_from: 2026-07-01
    applies_to: marginal
    tiers:
      - {above: 10000, discount: 0.15}
      - {above: 50000, discount: 0.25}
      - {above: 100000, discount: 0.35}
models:
  claude-haiku-4-5:
    prices:
      - {input: 1, output: 5}
      - effective_from: 2026-06-01
        input: 0.5
        output: 2.5
      - effective_from: 2026-09-15T12:00:00Z
        input: 0.8
        output: 4
        cache_read: 0.05
  in-house-model:
    aliases: [claude-sonnet-4-6]
    prices:
      - {input: 2, output: 8}
"""


def test_a_price_change_applies_from_its_effective_date(tmp_path: Path) -> None:
    pricing = Pricing.load(write(tmp_path, OVERRIDE))
    usage = TokenUsage(input_tokens=1_000_000, cache_read_input_tokens=1_000_000)
    at = datetime.fromisoformat
    assert pricing.cost("claude-haiku-4-5", usage, at=at("2026-05-31T23:59:59+00:00")) == Decimal("1.1")
    assert pricing.cost("claude-haiku-4-5", usage, at=at("2026-06-01T00:00:00+00:00")) == Decimal("0.55")
    assert pricing.cost("claude-haiku-4-5", usage, at=at("2026-09-15T11:59:59+00:00")) == Decimal("0.55")
    # The explicit cache_read replaces the 0.1 x input default.
    assert pricing.cost("claude-haiku-4-5", usage, at=at("2026-09-15T12:00:00+00:00")) == Decimal("0.85")
    # A naive time is UTC, another zone is converted: 08:00 in New York (EDT) is 12:00 UTC.
    assert pricing.cost("claude-haiku-4-5", usage, at=at("2026-09-15T12:00:00")) == Decimal("0.85")
    assert pricing.cost("claude-haiku-4-5", usage, at=at("2026-09-15T08:00:00-04:00")) == Decimal("0.85")


def test_an_override_replaces_the_models_it_names_and_keeps_the_others(tmp_path: Path) -> None:
    pricing = Pricing.load(write(tmp_path, OVERRIDE))
    # claude-sonnet-4-6 is now an alias of the in-house entry; the default entry of that name is gone.
    assert pricing.cost("claude-sonnet-4-6", MILLION, at=NOW) == Decimal(2)
    assert "claude-sonnet-4-6" not in pricing.models
    assert pricing.cost("claude-opus-4-6", MILLION, at=NOW) == Decimal(5)
    assert pricing.cost("claude-opus-4-5-20251101", MILLION, at=NOW) == Decimal(5)
    assert Pricing.load().cost("claude-sonnet-4-6", MILLION, at=NOW) == Decimal(3)  # defaults untouched


def test_volume_discount_total_and_marginal(tmp_path: Path) -> None:
    pricing = Pricing.load(write(tmp_path, OVERRIDE))
    before, after = datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC)
    assert pricing.volume_discount(Decimal(10_000), at=before) == 0  # "over $10K"
    assert pricing.volume_discount(Decimal("10000.01"), at=before) == Decimal("1500.0015")
    assert pricing.volume_discount(Decimal(60_000), at=before) == Decimal(15_000)  # 25% of all
    assert pricing.volume_discount(Decimal(120_000), at=before) == Decimal(42_000)  # 35% of all
    # From July, marginal: 15% of 40,000 + 25% of 50,000 + 35% of 20,000 = 6,000 + 12,500 + 7,000.
    assert pricing.volume_discount(Decimal(120_000), at=after) == Decimal(25_500)
    assert pricing.volume_discount(Decimal(60_000), at=after) == Decimal(8_500)
    assert pricing.volume_discount(Decimal(9_000), at=after) == 0
    assert DEFAULTS.volume_discount(Decimal(1_000_000), at=NOW) == 0  # none by default


@given(st.decimals(min_value=0, max_value=1_000_000, places=2))
def test_marginal_tiers_never_make_more_spend_cost_less(spend: Decimal) -> None:
    pricing = Pricing.load(Path(__file__).parents[1] / "fixtures" / "cost" / "volume_marginal.yaml")
    more = spend + Decimal("0.01")
    assert more - pricing.volume_discount(more, at=NOW) > spend - pricing.volume_discount(spend, at=NOW)


# -- mistakes --------------------------------------------------------------------------------------------------


def test_the_packaged_defaults_are_valid() -> None:
    assert DEFAULTS_FILE.is_file()
    assert len(DEFAULTS.models) >= 10


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        (
            "models:\n  m:\n    prices:\n      - input: -3\n        output: 5\n",
            4,
            "setting 'models.m.prices.0.input': Input should be greater than or equal to 0",
        ),
        ("models:\n  m:\n    prices:\n      - {input: 1, output: 5, cache_raed: 1}\n", 4, "cache_raed"),
        (
            "models:\n  m:\n    prices:\n      - {input: 1, output: 5}\n      - {input: 2, output: 6}\n",
            2,
            "every price after the first needs an effective_from",
        ),
        (
            "models:\n  m:\n    prices:\n      - {effective_from: 2026-02-01, input: 1, output: 5}\n"
            "      - {effective_from: 2026-01-01, input: 2, output: 6}\n",
            2,
            "oldest first",
        ),
        (
            "models:\n  a:\n    aliases: [x]\n    prices: [{input: 1, output: 5}]\n"
            "  b:\n    aliases: [x]\n    prices: [{input: 1, output: 5}]\n",
            1,
            "'x' names both 'a' and 'b'",
        ),
        ("volume_discounts:\n  - tiers:\n      - {above: 100, discount: 1.5}\n", 3, "discount"),
        ("models:\n  m:\n    prices: [{input: 1, output: 5}\n", 4, "not valid YAML"),
        ("batch_discount: [0.5]\n", 1, "batch_discount"),
        ("- 1\n- 2\n", 1, "must be a mapping"),
    ],
    ids=["negative", "unknown-key", "undated", "out-of-order", "alias-twice", "discount", "yaml", "type", "list"],
)
def test_a_mistake_names_the_key_the_file_and_the_line(tmp_path: Path, text: str, line: int, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PricingError) as raised:
        Pricing.load(path)
    message = str(raised.value)
    assert f"{path}:{line}" in message
    assert expected in message
    assert isinstance(raised.value, SettingsError)  # the CLI reports it as a configuration mistake


def test_an_unreadable_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PricingError, match="cannot read"):
        Pricing.load(tmp_path / "missing.yaml")


def test_a_model_has_no_price_before_its_first_date(tmp_path: Path) -> None:
    path = write(tmp_path, "models:\n  m:\n    prices:\n      - {effective_from: 2026-03-01, input: 1, output: 5}\n")
    pricing = Pricing.load(path)
    assert pricing.cost("m", MILLION, at=datetime(2026, 3, 1, tzinfo=UTC)) == 1
    with pytest.raises(UnknownModel, match="before 2026-03-01"):
        pricing.cost("m", MILLION, at=datetime(2026, 2, 28, tzinfo=UTC))


# -- teams -----------------------------------------------------------------------------------------------------


def test_the_first_team_in_file_order_sharing_a_role() -> None:
    teams = {"platform": ("sre", "admin"), "payments": ("developer", "payments"), "everyone": ("developer",)}
    assert team_of(("developer",), teams) == "payments"
    assert team_of(("developer", "sre"), teams) == "platform"
    assert team_of(("auditor",), teams) is None
    assert team_of((), teams) is None
    assert team_of(("developer",), {}) is None
