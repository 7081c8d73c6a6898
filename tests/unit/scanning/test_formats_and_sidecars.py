"""XGBoost / LightGBM native models, signature sidecars and ONNX external data in archives (issue 14)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from modelshield.models import Format, RuleId, Verdict
from modelshield.policy.engine import SIDECAR_MESSAGE, evaluate
from modelshield.policy.groups import content_safety_group, default_groups
from modelshield.policy.metadata import ArtifactMetadata

from tests.corpus.formats import onnx_benign_with_external_dir, rules_of, scan_bytes, tar_of


def _xgb_booster() -> object:
    import numpy as np
    import xgboost as xgb

    x = np.random.default_rng(0).random((30, 3))
    return xgb.train({"max_depth": 2}, xgb.DMatrix(x, label=(x[:, 0] > 0.5)), num_boost_round=2)


@pytest.fixture(scope="module")
def xgb_models() -> dict[str, bytes]:
    booster = _xgb_booster()
    return {raw: bytes(booster.save_raw(raw)) for raw in ("ubj", "json")}  # type: ignore[attr-defined]


@pytest.mark.parametrize("encoding", ["ubj", "json"])
def test_xgboost_native_models_are_their_own_format_and_clean(
    xgb_models: dict[str, bytes], encoding: str
) -> None:
    report = scan_bytes(xgb_models[encoding], f"model.{encoding}")
    assert report.format == Format.XGBOOST
    assert report.findings == []
    assert "learner" in report.metadata["xgboost"]["keys"]


@pytest.mark.parametrize(
    "mangle",
    [lambda b: b[:-5], lambda b: b + b"\x80\x04X", lambda b: b.replace(b"[$d#", b"[$q#", 1)],
    ids=["truncated", "trailing bytes", "unknown marker"],
)
def test_xgboost_ubjson_that_is_not_exactly_a_model_is_malformed(
    xgb_models: dict[str, bytes], mangle
) -> None:
    data = mangle(xgb_models["ubj"])
    report = scan_bytes(data, "model.ubj")
    assert RuleId.MALFORMED in rules_of(report), report.findings


def test_xgboost_ubjson_nesting_is_bounded() -> None:
    key = b"L" + (7).to_bytes(8, "big") + b"learner"
    data = b"{" + key + b"[" * 10_000 + b"]" * 10_000 + b"}"
    report = scan_bytes(data, "deep.ubj")
    assert report.format == Format.XGBOOST
    assert any("deeper" in f.message for f in report.findings), report.findings


@pytest.fixture(scope="module")
def lgb_text() -> bytes:
    import lightgbm as lgb
    import numpy as np

    x = np.random.default_rng(0).random((60, 3))
    params = {"verbose": -1, "num_leaves": 4, "objective": "multiclass", "num_class": 3}
    booster = lgb.train(params, lgb.Dataset(x, label=(x[:, 0] * 3).astype(int), categorical_feature=[2]), 3)
    return booster.model_to_string().encode()


def test_lightgbm_text_model_is_its_own_format_and_clean(lgb_text: bytes) -> None:
    report = scan_bytes(lgb_text, "model.txt")
    assert report.format == Format.LIGHTGBM
    assert report.findings == []
    assert report.metadata["lightgbm"]["trees"] == 9  # 3 rounds x 3 classes


def test_lightgbm_model_with_a_foreign_line_is_malformed(lgb_text: bytes) -> None:
    data = lgb_text.replace(b"end of trees", b"end of trees\n\x80\x04cos\nsystem\n", 1)
    report = scan_bytes(data, "model.txt")
    assert RuleId.MALFORMED in rules_of(report), report.findings


# -- signature sidecars -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def signed_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real OpenSSF model-signing bundle (EC key), the way the README tells teams to sign."""
    import model_signing
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    root = tmp_path_factory.mktemp("signed")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (root / "key.pem").write_bytes(pem)
    (root / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    model_signing.signing.Config().use_elliptic_key_signer(private_key=root / "key.pem").sign(
        root / "model.safetensors", root / "model.safetensors.sig"
    )
    return root / "model.safetensors.sig"


def test_a_signature_sidecar_is_recognised_and_not_blocked_even_where_signatures_are_required(
    signed_model: Path,
) -> None:
    # Given the sidecar uploaded under S3-Production, which requires a verified author for models
    report = scan_bytes(signed_model.read_bytes(), "production/model.safetensors.sig")
    production = next(g for g in default_groups() if g.name == "S3-Production")
    evaluation = evaluate(report, production, ArtifactMetadata())
    # Then it is a signature, not scanned as a model, and its outcome says so instead of BLOCKED
    assert report.format == Format.SIGNATURE and report.findings == []
    assert evaluation.verdict is Verdict.ALLOWED
    assert evaluation.message == SIDECAR_MESSAGE
    skipped = {r.rule for r in evaluation.rules if r.status.value == "SKIPPED"}
    assert RuleId.AUTHOR_VERIFIED in skipped


def test_something_dressed_as_a_sigstore_bundle_is_malformed(signed_model: Path) -> None:
    doc = json.loads(signed_model.read_bytes())
    doc["payload"] = "gASVIQAAAAAAAACMBXBvc2l4lIwGc3lzdGVtlJOUjAplY2hvIHB3bmVklIWUUpQu"
    report = scan_bytes(json.dumps(doc).encode(), "model.sig")
    assert report.format == Format.SIGNATURE
    assert RuleId.MALFORMED in rules_of(report)


def test_armoured_pgp_signature_is_recognised() -> None:
    data = b"-----BEGIN PGP SIGNATURE-----\n\niQEzBAABCAAdFiEE\n=abcd\n-----END PGP SIGNATURE-----\n"
    report = scan_bytes(data, "model.bin.asc")
    assert report.format == Format.SIGNATURE and report.findings == []
    tail = scan_bytes(data + b"cos\nsystem\n", "model.bin.asc")
    assert RuleId.MALFORMED in rules_of(tail)


# -- ONNX external data ---------------------------------------------------------------------------------
def _external(tmp_path: Path) -> dict[str, bytes]:
    model = Path(onnx_benign_with_external_dir(tmp_path))
    return {f"model/{p.name}": p.read_bytes() for p in model.parent.iterdir() if p.is_file()}


def test_onnx_external_data_in_a_tar_is_resolved_as_that_models_data(tmp_path: Path) -> None:
    members = _external(tmp_path)
    assert len(members) == 2, members.keys()
    report = scan_bytes(tar_of(members), "bundle.tar")
    evaluation = evaluate(report, content_safety_group(), ArtifactMetadata())
    assert evaluation.verdict is Verdict.ALLOWED, report.findings
    (data_member,) = report.metadata["external_data_of"]
    assert report.metadata["external_data_of"][data_member].endswith(".onnx")


def test_unreferenced_unknown_bytes_in_a_tar_still_fail_closed(tmp_path: Path) -> None:
    members = _external(tmp_path)
    members = {(k if k.endswith(".onnx") else "model/other.bin"): v for k, v in members.items()}
    report = scan_bytes(tar_of(members), "bundle.tar")
    assert RuleId.SCAN_INCOMPLETE in rules_of(report)


def test_the_data_file_comes_first_in_the_archive(tmp_path: Path) -> None:
    members = dict(sorted(_external(tmp_path).items(), key=lambda kv: not kv[0].endswith(".onnx")))
    reordered = dict(reversed(list(members.items())))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in reordered.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    report = scan_bytes(buf.getvalue(), "bundle.tar")
    assert RuleId.SCAN_INCOMPLETE not in rules_of(report), report.findings
