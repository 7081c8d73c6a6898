"""Integration fixtures: the whole template on in-process moto, and the real ScanFunction handler."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.builders import MotoStack, template_stack


@pytest.fixture
def moto_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[MotoStack]:
    with template_stack(monkeypatch, tmp_path) as stack:
        yield stack
