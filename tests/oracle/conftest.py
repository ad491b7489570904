"""Session-wide oracle: tiny bases, adapters and PEFT's verdicts are built once per test run and shared."""

from __future__ import annotations

import os
import warnings

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from tests.oracle.cases import Oracle


@pytest.fixture(scope="session")
def oracle(tmp_path_factory: pytest.TempPathFactory) -> Oracle:
    """One oracle per session, building into a session temporary directory."""
    import transformers

    transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    warnings.filterwarnings("ignore")
    return Oracle(tmp_path_factory.mktemp("oracle"))
