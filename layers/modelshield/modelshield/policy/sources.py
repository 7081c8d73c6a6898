"""Which security group governs an object: its source, by longest matching prefix.

Ties on prefix length go to a source naming the bucket exactly over a wildcard ("*") one, so a
bucket-specific rule can narrow a catch-all one. An object under no source gets the group named
`default`; if the list has none, the built-in content-safety policy (under the name `default`)
stands in, so resolution never fails open by finding nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from modelshield.policy.groups import ANY_BUCKET, DEFAULT_GROUP, SecurityGroup, Source, content_safety_group


def resolve_group(
    groups: Sequence[SecurityGroup], bucket: str, key: str
) -> tuple[SecurityGroup, Source | None]:
    """The group and source for `s3://bucket/key`. A `bucket` of "*" matches sources in any bucket."""
    best: tuple[int, int, SecurityGroup, Source] | None = None
    for group in groups:
        for source in group.sources:
            if not source.matches(bucket, key):
                continue
            rank = (len(source.prefix), 0 if source.bucket == ANY_BUCKET else 1)
            if best is None or rank > best[:2]:
                best = (*rank, group, source)
    if best is not None:
        return best[2], best[3]
    for group in groups:
        if group.name == DEFAULT_GROUP:
            return group, None
    return content_safety_group().model_copy(update={"name": DEFAULT_GROUP}), None
