"""The fault suite's fixtures: the whole template on in-process moto with fault hooks on every client."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.builders import MotoStack, template_stack
from tests.faults.harness import Faults, installed


@pytest.fixture
def faults() -> Iterator[Faults]:
    """Every botocore session created from now on (moto gives each test a fresh default session, from
    which the handler builds its clients) passes each call through the fault registry first."""
    with installed() as registry:
        yield registry


@pytest.fixture
def stack(faults: Faults, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MotoStack]:
    """The template on in-process moto, built after the fault hooks are in place. Uploads keep their
    plaintext here: these invariants inspect the ingest version's tag after its verdict (removal itself is
    tested in tests/integration/test_scan_function.py and tests/e2e/test_controls_on_local_stack.py)."""
    monkeypatch.setenv("REMOVE_PLAINTEXT", "false")
    with template_stack(monkeypatch, tmp_path) as built:
        yield built


@pytest.fixture
def workdir(stack: MotoStack) -> Path:
    return Path(os.environ["WORKDIR"])
