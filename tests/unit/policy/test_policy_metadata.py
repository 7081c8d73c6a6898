"""Artifact metadata: model-card front matter (untrusted, bounded) and CLI --metadata pairs."""

from __future__ import annotations

import pytest
from modelshield.errors import UsageError
from modelshield.policy.metadata import (
    MAX_FRONT_MATTER_CHARS,
    ArtifactMetadata,
    base_model_from_card,
    license_from_card,
    metadata_from_pairs,
    parse_model_card,
)

CARD = """---
license: apache-2.0
base_model: google/gemma-2b
tags: [text-generation]
---
# My model
license: this line is prose, not metadata
"""


def test_model_card_front_matter_is_parsed() -> None:
    card = parse_model_card(CARD)
    assert license_from_card(card) == "apache-2.0"
    assert base_model_from_card(card) == "google/gemma-2b"


@pytest.mark.parametrize(
    "text",
    [
        "# no front matter\nlicense: mit\n",
        "---\nlicense: mit\n",  # never closed
        "---\nlicense: [unclosed\n---\n",  # invalid YAML
        "---\n- a list\n---\n",  # not a mapping
        "---\n!!python/object/apply:os.system ['echo pwned']\n---\n",  # safe_load refuses tags
        "",
    ],
)
def test_absent_or_hostile_front_matter_is_no_metadata(text: str) -> None:
    assert parse_model_card(text) == {}


def test_front_matter_beyond_the_size_bound_is_ignored() -> None:
    text = "---\n" + "x: y\n" * (MAX_FRONT_MATTER_CHARS // 4) + "license: mit\n---\n"
    assert parse_model_card(text) == {}


@pytest.mark.parametrize(
    ("card", "expected"),
    [
        ({"license": ["mit", "apache-2.0"]}, "mit OR apache-2.0"),
        ({"license": "other", "license_name": "llama3"}, "llama3"),
        ({"license": 3}, None),
        ({}, None),
    ],
)
def test_license_shapes(card: dict, expected: str | None) -> None:
    assert license_from_card(card) == expected


def test_metadata_pairs_map_onto_fields_with_aliases() -> None:
    metadata = metadata_from_pairs(
        ["license=MIT", "source_repo=google/gemma", "uploader=arn:aws:iam::1:role/x", "signature=/tmp/m.sig"]
    )
    assert metadata == ArtifactMetadata(
        source_type="local",
        license="MIT",
        hf_repo="google/gemma",
        uploader_principal="arn:aws:iam::1:role/x",
        signature_path="/tmp/m.sig",
    )
    assert metadata.hf_org == "google"
    assert metadata_from_pairs(["source_type=huggingface", "author=a=b"]).author == "a=b"


@pytest.mark.parametrize(
    ("pair", "problem"),
    [
        ("license", "expected KEY=VALUE"),
        ("=mit", "expected KEY=VALUE"),
        ("licence=mit", "unknown key 'licence'"),
        ("source_type=ftp", "use s3, huggingface or local"),
    ],
)
def test_bad_metadata_pairs_are_usage_errors_naming_the_pair(pair: str, problem: str) -> None:
    with pytest.raises(UsageError, match=problem):
        metadata_from_pairs([pair])


def test_a_key_given_twice_is_an_error() -> None:
    with pytest.raises(UsageError, match="given twice"):
        metadata_from_pairs(["hf_repo=a/b", "source_repo=c/d"])
