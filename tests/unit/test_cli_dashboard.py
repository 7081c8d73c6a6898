"""`modelshield dashboard`: DASHBOARD_URL, else the running local stack's URL, else one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from modelshield.cli import main as cli


def test_it_prints_the_deployed_dashboard_from_dashboard_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODELSHIELD_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("DASHBOARD_URL", "https://dash.example.org/")
    assert cli(["dashboard"]) == 0
    assert capsys.readouterr().out.strip() == "https://dash.example.org/"
    assert cli(["dashboard", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "url": "https://dash.example.org/",
        "metrics": "https://dash.example.org/metrics.json",
    }


def test_without_a_stack_it_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODELSHIELD_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("DASHBOARD_URL", raising=False)
    assert cli(["dashboard"]) == 2
    err = capsys.readouterr().err
    assert "modelshield local up" in err and "DASHBOARD_URL" in err and "Traceback" not in err
