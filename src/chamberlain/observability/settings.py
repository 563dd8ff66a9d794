"""The `metrics:` section of the settings: whether /metrics is served, and the bearer token that guards it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class MetricsSettings(BaseModel):
    """`/metrics` is off by default (404): an operator turns it on, normally with a bearer token.

    Prometheus scrapes replicas over the pod network, and a bearer token is what its scrape configuration carries
    (`authorization: {credentials_file: ...}`); set it with the environment variable
    CHAMBERLAIN_METRICS__BEARER_TOKEN (from a Kubernetes Secret) rather than in the file. Without a token an enabled
    endpoint answers anyone who can reach the port: keep that for networks a NetworkPolicy already restricts.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    bearer_token: SecretStr | None = Field(None, min_length=16, description="required from scrapers when set")
