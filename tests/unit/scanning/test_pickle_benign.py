"""Real files from torch, scikit-learn, joblib and numpy scan clean, and we list what they import."""

from __future__ import annotations

import os
import warnings

import pytest
from modelshield.models import Format, RuleId

from tests.corpus import pickle_family as corpus
from tests.corpus.pickle_family import PROBLEM_RULES, rules_of, scan_bytes

SKLEARN = ["logistic", "forest", "pipeline"]


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("model", SKLEARN)
def test_sklearn_pickles_are_clean_and_their_globals_match_a_reference_walk(
    model: str, protocol: int
) -> None:
    # Given a fitted estimator pickled with the standard library
    data = corpus.sklearn_pickle(model, protocol)
    # When scanned
    report = scan_bytes(data, "model.pkl")
    # Then nothing is flagged, and the globals we report are exactly those pickletools sees
    assert report.format == Format.PICKLE
    assert not rules_of(report) & PROBLEM_RULES, report.findings
    expected = {g.replace("__builtin__.", "builtins.") for g in corpus.reference_globals(data)}
    assert set(report.metadata["globals"]) == expected


@pytest.mark.parametrize("model", SKLEARN)
def test_sklearn_joblib_files_are_clean(model: str, tmp_path) -> None:
    # Given joblib dumps to a file object, to a real file (alignment padding) and compressed
    samples = {
        "stream": corpus.sklearn_joblib(model),
        "file": corpus.joblib_file(corpus._sklearn_models()[model], os.path.join(tmp_path, "m.joblib")),
        "zlib": corpus.sklearn_joblib(model, 3),
    }
    for label, data in samples.items():
        report = scan_bytes(data, f"{label}.joblib")
        # Then each is understood as joblib (array bytes skipped, not called malformed) and clean
        assert "joblib" in report.metadata["formats"], (label, report.metadata)
        assert not rules_of(report) & PROBLEM_RULES, (label, report.findings)
        assert "joblib.numpy_pickle.NumpyArrayWrapper" in report.metadata["globals"]


def test_compressed_joblib_goes_through_the_compressed_scanner_into_the_pickle_walker() -> None:
    report = scan_bytes(corpus.sklearn_joblib("logistic", 3), "m.joblib")
    assert report.format == Format.COMPRESSED
    assert report.metadata["formats"][:2] == ["compressed", "joblib"]


@pytest.mark.parametrize(
    "make",
    [
        corpus.torch_state_dict_zip,
        corpus.torch_optimizer_state,
        corpus.torch_misc_objects,
        corpus.legacy_torch,
    ],
    ids=["state dict", "optimizer state", "dtypes devices sizes parameters", "legacy format"],
)
def test_torch_checkpoints_are_clean(make) -> None:
    report = scan_bytes(make(), "model.pt")
    assert report.format in (Format.PYTORCH_ZIP, Format.PYTORCH_LEGACY)
    assert not rules_of(report) & PROBLEM_RULES, report.findings
    assert "torch._utils._rebuild_tensor_v2" in report.metadata["globals"]


def test_full_module_of_builtin_layers_is_clean() -> None:
    report = scan_bytes(corpus.torch_full_module_builtin_layers(), "model.pt")
    assert not rules_of(report) & PROBLEM_RULES, report.findings
    assert "torch.nn.modules.container.Sequential" in report.metadata["globals"]


def test_full_module_with_a_user_class_is_unknown_code() -> None:
    # Given torch.save of an object whose class is the user's own
    report = scan_bytes(corpus.torch_full_module_user_class(), "model.pt")
    # Then that class is MS-CODE-UNKNOWN (loading imports and runs the user's module): correct behaviour
    assert rules_of(report) == {RuleId.CODE_UNKNOWN}
    assert "UserNet" in report.findings[0].message


def test_torchscript_archive_is_clean() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = corpus.torchscript_archive()
    report = scan_bytes(data, "model.pt")
    assert report.format == Format.TORCHSCRIPT
    assert not rules_of(report) & PROBLEM_RULES, report.findings


def test_numpy_files_are_clean() -> None:
    import numpy as np

    samples = {
        "npy": corpus.npy_bytes(np.arange(12.0).reshape(3, 4)),
        "fortran": corpus.npy_bytes(np.asfortranarray(np.ones((3, 2), dtype="<i4"))),
        "structured": corpus.npy_bytes(np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8", (2,))])),
        "unicode": corpus.npy_bytes(np.array(["ab", "cde"])),
        "scalar": corpus.npy_bytes(np.float32(3.5)),
        "npz": corpus.npz_bytes(a=np.ones(3), b=np.arange(4)),
        "npz compressed": corpus.npz_bytes(True, a=np.ones(3), b=np.arange(4)),
    }
    for label, data in samples.items():
        report = scan_bytes(data, label)
        assert report.format in (Format.NUMPY, Format.NUMPY_NPZ), label
        assert not rules_of(report) & PROBLEM_RULES, (label, report.findings)


def test_every_global_real_libraries_import_is_allowlisted(tmp_path) -> None:
    """The allowlist is built from what real files import: list them and check each one is allowed."""
    import numpy as np
    from modelshield.scanning.pickle_globals import GlobalVerdict, judge_global

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        samples = {
            "torch state dict": corpus.torch_state_dict_zip(),
            "torch optimizer": corpus.torch_optimizer_state(),
            "torch misc": corpus.torch_misc_objects(),
            "torch full module": corpus.torch_full_module_builtin_layers(),
            "torch legacy": corpus.legacy_torch(),
            "joblib arrays": corpus.joblib_dump({"a": np.ones((2, 2)), "o": np.array([None], dtype=object)}),
            **{f"sklearn {m} p{p}": corpus.sklearn_pickle(m, p) for m in SKLEARN for p in (2, 5)},
            **{f"sklearn {m} joblib": corpus.sklearn_joblib(m) for m in SKLEARN},
        }
    seen: dict[str, set[str]] = {}
    for label, data in samples.items():
        for name in scan_bytes(data, label).metadata["globals"]:
            seen.setdefault(name, set()).add(label)
    assert len(seen) >= 15  # the list below is what real files need
    not_allowed = {}
    for name in seen:
        module, _, attr = name.rpartition(".")
        if judge_global(module, attr).verdict is not GlobalVerdict.ALLOW:
            not_allowed[name] = seen[name]
    assert not not_allowed, not_allowed
