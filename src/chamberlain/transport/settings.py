"""The `uds:` section of chamberlain.yaml: the Unix socket `chamberlain serve` listens on, and who may connect."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from chamberlain.transport.unix_socket import PeerPolicy

# uid_t and gid_t are 32-bit unsigned; (uid_t)-1 means "no change" to chown(2) and is never a real user or group.
UnixId = Annotated[int, Field(ge=0, lt=2**32 - 1)]


class UnixSocketSettings(BaseModel):
    """A peer is admitted when its uid is in `allowed_uids` or its gid is in `allowed_gids` (see PeerPolicy)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path | None = Field(None, description="serve on this Unix socket instead of TCP (as `serve --uds PATH`)")
    allowed_uids: tuple[UnixId, ...] = Field(
        default_factory=lambda: (os.geteuid(),), description="default: only the user running the server"
    )
    allowed_gids: tuple[UnixId, ...] = ()

    @model_validator(mode="after")
    def _someone_may_connect(self) -> UnixSocketSettings:
        if not self.allowed_uids and not self.allowed_gids:
            raise ValueError("allowed_uids and allowed_gids are both empty, so nobody could connect")
        return self

    @property
    def policy(self) -> PeerPolicy:
        return PeerPolicy(frozenset(self.allowed_uids), frozenset(self.allowed_gids))
