"""Shared test set-up. Fixture modules live in tests/fixtures/ and are registered here; plain helpers (asset paths,
the in-process CLI runner, lock editors, sparse copies) live in tests/helpers.py."""

from __future__ import annotations

import os

# No test may reach the network; the Hub client is told it is offline unless a test points it at 127.0.0.1.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("NO_COLOR", None)

pytest_plugins = [
    "tests.fixtures.header_bases",
    "tests.fixtures.tiny_models",
    "tests.fixtures.fake_hub",
]
