"""What every identity provider's configuration has, whatever its protocol."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from chamberlain.net.hosts import check_off_machine_url


def _https_url(url: str) -> str:
    # An IdP's answers decide who signs in: never fetched in the clear off this machine.
    return check_off_machine_url(url)


def _domain(value: str) -> str:
    domain = value.strip().lower().rstrip(".")
    labels = domain.split(".")
    if len(labels) < 2 or any(not label or len(label) > 63 for label in labels) or len(domain) > 253:
        raise ValueError(f"{value!r} is not a domain name (write it like 'company.com')")
    try:
        domain.encode("idna")
    except UnicodeError:
        raise ValueError(f"{value!r} is not a domain name") from None
    if any(not (char.isalnum() or char in "-.") for char in domain):
        raise ValueError(f"{value!r} is not a domain name")
    return domain


https_url = Annotated[str, Field(max_length=2000), AfterValidator(_https_url)]
Domain = Annotated[str, AfterValidator(_domain)]
PROVIDER_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"


class ProviderBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    display_name: str | None = Field(None, min_length=1, max_length=200, description="shown on the sign-in page")
    # Email domains captured by this provider: their people sign in here and never with a local password.
    domains: tuple[Domain, ...] = ()
    # amr / acr / AuthnContextClassRef values that prove a second factor; None: the protocol's and preset's own.
    mfa_values: tuple[str, ...] | None = None
