"""Debian's headless Chromium for browser tests (apt-get install chromium chromium-driver), driven through Playwright
or Selenium; never a browser a test tool downloads. Missing pieces skip the tests, except under CI=true."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
IN_CI = os.environ.get("CI", "").lower() == "true"

# As root in a closed network Chromium needs all of these; without the background-networking ones it keeps trying to
# reach Google's hosts. Only loopback traffic is made.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def require_browser(*, executables: Sequence[str] = (CHROMIUM,), package: str) -> None:
    """Skips (fails in CI) unless the executables and the Python package that drives them are installed."""
    missing = [
        f"{path} (apt-get install chromium chromium-driver)" for path in executables if not os.access(path, os.X_OK)
    ]
    if importlib.util.find_spec(package) is None:
        missing.append(f"the {package} package")
    if not missing:
        return
    message = f"browser tests need {' and '.join(missing)}"
    if IN_CI:
        pytest.fail(f"browser tests must run in CI: {message}")
    pytest.skip(message)


def _runnable(path: str) -> bool:
    return os.access(path, os.X_OK)
