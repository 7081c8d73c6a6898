"""LightGBM text models (`Booster.save_model` / `model_to_string`), parsed line by line.

A LightGBM model is text: a header of `key=value` lines, `Tree=N` blocks of `key=value` arrays,
`end of trees`, feature importances, a `parameters:` block of `[name: value]` lines, `end of parameters`
and `pandas_categorical:<json>`. Loading it runs no code. The scanner makes sure every line has one of
those shapes (so "LightGBM" is a true statement about the bytes and nothing rides along), that the
sections come in order, that the tree count matches `Tree=` blocks, and that `pandas_categorical` is JSON.
Training parameters that name files (`data`, `valid`, `machine_list_filename`, `output_model`, ...)
are recorded in the metadata: LightGBM does not read them when it loads a model.
Streaming: one line at a time, lines capped at Limits.max_metadata_bytes.
"""

from __future__ import annotations

import json
import re
from typing import BinaryIO, Final

from modelshield.models import Format, RuleId, Severity
from modelshield.scanning.registry import ScanContext, register

_KEY_VALUE: Final = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*=[^\n]*")
_TREE: Final = re.compile(rb"Tree=(\d+)")
_IMPORTANCE: Final = re.compile(rb"[^=\n]+=\d+")
_PARAMETER: Final = re.compile(rb"\[([a-z0-9_]+): ?([^\n]*)\]")
_PATH_PARAMETERS: Final = frozenset(
    {"data", "valid", "input_model", "output_model", "machine_list_filename", "output_result",
     "initscore_filename", "forcedsplits_filename", "forcedbins_filename", "convert_model"}
)  # fmt: skip
_SECTIONS: Final = ("header", "trees", "importances", "parameters", "tail")


def _sniff(head: bytes, stream: BinaryIO) -> bool:
    return head.startswith(b"tree\nversion=v")


@register(Format.LIGHTGBM, sniff=_sniff, priority=76)
def scan_lightgbm(stream: BinaryIO, ctx: ScanContext) -> None:
    """Every line one of the model format's shapes, sections in order."""
    section = "header"
    offset = 0
    trees = 0
    declared: int | None = None
    paths: dict[str, str] = {}
    stream.seek(0)
    limit = ctx.limits.max_metadata_bytes

    def bad(message: str) -> None:
        ctx.add(RuleId.MALFORMED, Severity.HIGH, f"LightGBM model: {message}", offset=offset)

    for raw in iter(lambda: stream.readline(limit + 1), b""):
        ctx.tick()
        if len(raw) > limit:
            bad(f"a line longer than {limit} bytes")
            return
        line = raw.rstrip(b"\r\n")
        if section == "header" and offset == 0:
            ok = line == b"tree"
        elif not line:
            ok = True
        elif line == b"end of trees" and section in ("header", "trees"):
            section, ok = "importances", True
        elif line == b"feature_importances:" and section == "importances":
            ok = True
        elif line == b"parameters:" and section in ("importances", "header"):
            section, ok = "parameters", True
        elif line == b"end of parameters" and section == "parameters":
            section, ok = "tail", True
        elif line.startswith(b"pandas_categorical:") and section in ("importances", "tail"):
            try:
                json.loads(line[len(b"pandas_categorical:") :])
                ok = True
            except ValueError:
                bad("pandas_categorical is not JSON")
                return
            section = "tail"
        elif section in ("header", "trees") and _TREE.fullmatch(line):
            section, ok = "trees", True
            trees += 1
        elif section in ("header", "trees") and _KEY_VALUE.fullmatch(line):
            ok = True
            if section == "header" and line.startswith(b"tree_sizes="):
                declared = len(line.split(b"=", 1)[1].split())
        elif section == "importances" and _IMPORTANCE.fullmatch(line):
            ok = True
        elif section == "parameters" and (p := _PARAMETER.fullmatch(line)):
            ok = True
            name, value = p.group(1).decode(), p.group(2).decode("utf-8", "replace").strip()
            if name in _PATH_PARAMETERS and value:
                paths[name] = value[:200]
        else:
            ok = False
        if not ok:
            bad(f"line {line[:80]!r} is not part of the text model format (section {section})")
            return
        offset += len(raw)
    if section not in ("importances", "tail"):
        bad("no 'end of trees': the model is truncated")
        return
    if declared is not None and declared != trees:
        bad(f"tree_sizes lists {declared} trees but the file has {trees} Tree= blocks")
        return
    meta: dict[str, object] = {"trees": trees}
    if paths:
        meta["training_paths"] = paths  # recorded by training; not read when the model loads
    ctx.set_metadata("lightgbm", meta)
