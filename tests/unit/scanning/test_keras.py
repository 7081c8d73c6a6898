"""Keras `.keras` and `.h5`: code in the config is found wherever it hides; real models stay clean."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from modelshield.models import Format, RuleId, Severity
from modelshield.scanning.hdf5 import HDF5Reader
from modelshield.scanning.keras import DANGEROUS_MODULE_ROOTS, KERAS_DANGEROUS_NAMES, judge_config
from modelshield.scanning.registry import Limits, ScanContext

from tests.corpus import formats as corpus
from tests.corpus.formats import findings_of, problem_rules, rules_of, scan_bytes

# -- benign, made by Keras itself --------------------------------------------------------------------------


def test_real_keras_file_is_clean() -> None:
    # Given a Sequential Dense model saved by Keras 3 as .keras
    data, _ = corpus.keras_benign_files()
    # When scanned
    report = scan_bytes(data, "model.keras")
    # Then it is recognised, its weights member is read as HDF5, and nothing is reported
    assert report.format == Format.KERAS
    assert "keras-h5" in report.metadata["formats"]
    assert report.metadata["keras_version"].startswith("3.")
    assert not rules_of(report) & problem_rules(), report.findings


def test_real_legacy_h5_is_clean() -> None:
    _, data = corpus.keras_benign_files()
    report = scan_bytes(data, "model.h5")
    assert report.format == Format.KERAS_H5
    assert report.metadata["keras_model_config"] is True  # the config was found and judged
    assert not rules_of(report) & problem_rules(), report.findings


# -- Lambda layers -----------------------------------------------------------------------------------------


def test_real_lambda_layer_is_code_execution() -> None:
    # Given a model with a Lambda layer saved by Keras (bytecode marshalled into config.json)
    report = scan_bytes(corpus.keras_lambda_file(), "lambda.keras")
    # Then it is CODE-EXEC, located at the config member and naming the layer
    hits = findings_of(report, RuleId.CODE_EXEC)
    assert len(hits) == 1
    assert hits[0].severity == Severity.CRITICAL
    assert hits[0].location == "lambda.keras!config.json"
    assert "'doubler'" in hits[0].message and "bytecode" in hits[0].message


def test_lambda_nested_in_wrapped_functional_model_is_found() -> None:
    report = scan_bytes(corpus.keras_nested_lambda(), "nested.keras")
    hits = findings_of(report, RuleId.CODE_EXEC)
    assert [h.detail["layer"] for h in hits] == ["hidden_lambda"]


def test_keras2_h5_lambda_is_found_in_the_model_config_attribute() -> None:
    # Given a legacy .h5 whose root attribute model_config holds a Keras 2 Lambda (bytecode list)
    data = corpus.h5_with_attrs({"model_config": corpus.keras2_lambda_config(), "keras_version": "2.15.0"})
    # When scanned
    report = scan_bytes(data, "old.h5")
    # Then the Lambda is reported
    hit = findings_of(report, RuleId.CODE_EXEC)[0]
    assert "evil_lambda" in hit.message and hit.location == "old.h5"
    assert report.metadata["keras_version"] == "2.15.0"


@pytest.mark.parametrize(
    "variant",
    [
        {"libver": "latest"},  # superblock v3, v2 object headers
        {"userblock": 512},  # HDF5 data after a user block
        {"as_bytes": True},  # fixed-length string attribute instead of variable-length
    ],
    ids=["libver-latest", "userblock", "fixed-length"],
)
def test_hdf5_layouts_written_by_h5py_are_read(variant: dict[str, object]) -> None:
    config = corpus.keras2_lambda_config()
    value: object = np.bytes_(config.encode()) if variant.get("as_bytes") else config
    kwargs = {k: v for k, v in variant.items() if k != "as_bytes"}
    data = corpus.h5_with_attrs({"model_config": value}, **kwargs)  # type: ignore[arg-type]
    report = scan_bytes(data, "variant.h5")
    assert findings_of(report, RuleId.CODE_EXEC), report.findings


def test_training_config_is_judged_too() -> None:
    training = json.dumps({"loss": {"module": "os", "class_name": "function", "config": "system"}})
    data = corpus.h5_with_attrs(
        {"model_config": json.dumps(corpus.keras_sequential()), "training_config": training}
    )
    report = scan_bytes(data, "train.h5")
    assert any("'os.system'" in f.message for f in findings_of(report, RuleId.CODE_EXEC))


def test_dense_attribute_storage_fails_closed() -> None:
    # Given an HDF5 root with many attributes under libver='latest' (kept in a fractal heap we don't read)
    attrs: dict[str, object] = {f"a{i}": "x" * 100 for i in range(20)}
    attrs["model_config"] = corpus.keras2_lambda_config()
    report = scan_bytes(corpus.h5_with_attrs(attrs, libver="latest"), "dense.h5")
    assert any("dense storage" in f.message for f in findings_of(report, RuleId.SCAN_INCOMPLETE))


def test_hdf5_reader_returns_string_attributes() -> None:
    data = corpus.h5_with_attrs({"model_config": '{"a": 1}', "backend": "torch", "n": 3})
    attrs = HDF5Reader(io.BytesIO(data), max_value=1 << 20).root_attributes()
    assert attrs.strings["model_config"] == ['{"a": 1}']
    assert attrs.strings["backend"] == ["torch"]
    assert "n" in attrs.others


def test_corrupt_hdf5_is_malformed_and_incomplete() -> None:
    data = bytearray(corpus.h5_with_attrs({"model_config": corpus.keras2_lambda_config()}))
    data[64:200] = b"\xff" * 136  # wipe the root symbol table entry: no way to the attributes
    report = scan_bytes(bytes(data), "broken.h5")
    assert {RuleId.MALFORMED, RuleId.SCAN_INCOMPLETE} <= rules_of(report)


# -- references that escape safe_mode ----------------------------------------------------------------------


def test_builtins_function_reference_escapes_safe_mode() -> None:
    report = scan_bytes(corpus.keras_safe_mode_escape(), "escape.keras")
    hit = findings_of(report, RuleId.CODE_EXEC)[0]
    assert "builtins.exec" in hit.message and hit.location == "escape.keras!config.json"


def test_keras_get_file_gadget_is_code_execution() -> None:
    report = scan_bytes(corpus.keras_get_file_gadget(), "gadget.keras")
    assert any("get_file" in f.message for f in findings_of(report, RuleId.CODE_EXEC))


def test_every_keras_deny_entry_has_a_reason_and_findings_carry_it() -> None:
    # Given the Keras deny lists (data, like pickle_globals.py): every entry says what it could do
    for name, reason in {**DANGEROUS_MODULE_ROOTS, **KERAS_DANGEROUS_NAMES}.items():
        assert isinstance(reason, str) and len(reason) > 10, name
    # When configs reference a dangerous module and a dangerous Keras name
    escape = findings_of(scan_bytes(corpus.keras_safe_mode_escape(), "escape.keras"), RuleId.CODE_EXEC)[0]
    gadget = findings_of(scan_bytes(corpus.keras_get_file_gadget(), "gadget.keras"), RuleId.CODE_EXEC)[0]
    # Then each finding carries that entry's reason
    assert escape.detail["reason"] == DANGEROUS_MODULE_ROOTS["builtins"]
    assert gadget.detail["reason"] == KERAS_DANGEROUS_NAMES["get_file"]


def test_custom_object_outside_keras_is_unknown_code() -> None:
    report = scan_bytes(corpus.keras_custom_object(), "custom.keras")
    hit = findings_of(report, RuleId.CODE_UNKNOWN)[0]
    assert "my_company.layers.MyLayer" in hit.message
    assert not findings_of(report, RuleId.CODE_EXEC)


def _judge(config: object) -> list[tuple[RuleId, str]]:
    ctx = ScanContext(limits=Limits(), location="config.json")
    ctx.shared.deadline = float("inf")
    judge_config(config, ctx, member=None)
    return [(f.rule, f.message) for f in ctx.shared.findings]


@pytest.mark.parametrize(
    ("obj", "rule"),
    [
        ({"module": "subprocess", "class_name": "Popen", "config": {}}, RuleId.CODE_EXEC),
        (
            {"module": "keras.layers", "class_name": "TorchModuleWrapper", "config": {"name": "t"}},
            RuleId.CODE_EXEC,
        ),
        (
            {"class_name": "TFOpLambda", "config": {"name": "op", "function": "io.write_file"}},
            RuleId.CODE_EXEC,
        ),
        ({"class_name": "TFSMLayer", "config": {"name": "sm", "filepath": "/tmp/x"}}, RuleId.CODE_UNKNOWN),
        ({"class_name": "MyCustomDense", "config": {"name": "c"}}, RuleId.CODE_UNKNOWN),
        ({"class_name": "Custom>Thing", "config": {}}, RuleId.CODE_UNKNOWN),
        (
            {"module": "keras", "class_name": "X", "registered_name": "acme>X", "config": {}},
            RuleId.CODE_UNKNOWN,
        ),
    ],
)
def test_config_objects_are_judged(obj: dict[str, object], rule: RuleId) -> None:
    found = _judge(corpus.keras_sequential(corpus.keras_dense("d", kernel_initializer=obj)))
    assert [r for r, _ in found] == [rule]


@pytest.mark.parametrize(
    "obj",
    [
        {"class_name": "TFOpLambda", "config": {"name": "add", "function": "math.add"}},
        {
            "module": "keras.src.activations",
            "class_name": "function",
            "config": "relu",
            "registered_name": "function",
        },
        {
            "module": "keras_hub.src.models",
            "class_name": "GemmaBackbone",
            "registered_name": "keras_hub>GemmaBackbone",
        },
        {"class_name": "__numpy__", "config": {"value": [1, 2], "dtype": "float32"}},
        {"class_name": "GlorotUniform", "config": {"seed": None}},
    ],
)
def test_keras_and_value_objects_are_fine(obj: dict[str, object]) -> None:
    assert _judge(corpus.keras_sequential(corpus.keras_dense("d", kernel_initializer=obj))) == []


def test_config_that_is_not_json_fails_closed() -> None:
    data = corpus.keras_zip({})  # valid, then replace config.json with garbage of the same length
    bad = data.replace(b"{}", b"{[", 1)
    report = scan_bytes(bad, "bad.keras")
    assert {RuleId.MALFORMED, RuleId.SCAN_INCOMPLETE} <= rules_of(report)


# -- ways around the .keras sniffer ------------------------------------------------------------------------


def _lambda_config() -> dict[str, object]:
    lam = corpus.keras_layer(
        "Lambda", {"name": "lam", "function": {"class_name": "__lambda__", "config": {}}}
    )
    return corpus.keras_sequential(lam)


def test_keras_archive_with_prepended_bytes_is_still_judged() -> None:
    # Given a .keras with junk before it (zipfile, and so Keras, still opens it)
    data = b"\x00" * 100 + corpus.keras_zip(_lambda_config())
    report = scan_bytes(data, "prefixed.keras")
    assert report.format == Format.KERAS
    assert findings_of(report, RuleId.CODE_EXEC)


def test_keras_archive_without_metadata_is_still_judged() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("config.json", json.dumps(_lambda_config()))
        z.writestr("model.weights.h5", b"")
    report = scan_bytes(buf.getvalue(), "nometa.keras")
    assert report.format == Format.KERAS
    assert [f.location for f in findings_of(report, RuleId.CODE_EXEC)] == ["nometa.keras!config.json"]


def test_loose_keras_config_json_is_judged_by_the_text_scanner() -> None:
    report = scan_bytes(json.dumps(_lambda_config()).encode(), "config.json")
    assert report.format == Format.TEXT
    assert findings_of(report, RuleId.CODE_EXEC)


def test_utf16_config_is_decoded_like_keras_does() -> None:
    # Given a config.json in UTF-16 (json.loads on bytes, as Keras calls it, accepts that)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("metadata.json", b"{}")
        z.writestr("config.json", json.dumps(_lambda_config()).encode("utf-16"))
    report = scan_bytes(buf.getvalue(), "utf16.keras")
    assert findings_of(report, RuleId.CODE_EXEC)
