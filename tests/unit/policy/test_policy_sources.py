"""Source resolution: longest prefix wins, exact bucket beats wildcard, and a default always exists."""

from __future__ import annotations

import pytest
from modelshield.policy.groups import SecurityGroup, load_groups
from modelshield.policy.sources import resolve_group

GROUPS = load_groups(
    """
groups:
  - name: Production
    sources:
      - {type: s3, bucket: "*", prefix: production/}
  - name: Vision
    sources:
      - {type: s3, bucket: "*", prefix: production/vision/}
  - name: Ingest-Vision
    sources:
      - {type: s3, bucket: ingest-bucket, prefix: production/vision/}
  - name: HF
    sources:
      - {type: huggingface, bucket: mirror-bucket, prefix: huggingface/}
      - {type: huggingface, bucket: mirror-bucket, prefix: hf/}
  - name: default
"""
)


@pytest.mark.parametrize(
    ("bucket", "key", "group", "prefix"),
    [
        ("any-bucket", "production/model.onnx", "Production", "production/"),
        ("any-bucket", "production/vision/resnet.onnx", "Vision", "production/vision/"),  # longest prefix
        (
            "ingest-bucket",
            "production/vision/resnet.onnx",
            "Ingest-Vision",
            "production/vision/",
        ),  # exact bucket
        ("mirror-bucket", "hf/google/gemma/model.safetensors", "HF", "hf/"),  # second source of a group
        ("other-bucket", "huggingface/google/gemma/x", "default", None),  # bucket must match
        ("any-bucket", "productionx/model.onnx", "default", None),  # prefixes are literal
        ("any-bucket", "staging/model.onnx", "default", None),
    ],
)
def test_resolution(bucket: str, key: str, group: str, prefix: str | None) -> None:
    chosen, source = resolve_group(GROUPS, bucket, key)
    assert chosen.name == group
    assert (source.prefix if source else None) == prefix


def test_a_wildcard_query_bucket_matches_sources_in_any_bucket() -> None:
    # The CLI asks "which group would govern this path?" without a bucket
    assert resolve_group(GROUPS, "*", "huggingface/google/gemma/x")[0].name == "HF"


def test_without_a_default_group_the_built_in_content_safety_policy_stands_in() -> None:
    # Given groups with no `default`, when nothing matches
    group, source = resolve_group([SecurityGroup(name="only")], "b", "k")
    # Then the built-in policy answers, under the name default, rather than nothing
    assert group.name == "default" and source is None
    assert any(r.enabled and r.blocking for r in group.effective_rules())
