"""The import judgement generalises: what a name is and where it lives decide, not a hand list (issue 14)."""

from __future__ import annotations

import collections
import datetime
import decimal
import fractions
import importlib.metadata
import pickle
import uuid

import pytest
from modelshield.models import RuleId, Verdict
from modelshield.policy.engine import evaluate
from modelshield.policy.groups import content_safety_group
from modelshield.policy.metadata import ArtifactMetadata
from modelshield.scanning.pickle_globals import GlobalVerdict, catalogue, judge_global

from tests.corpus.pickle_family import call_global_p0, proto, rules_of, scan_bytes, su


@pytest.mark.parametrize(
    ("module", "name", "verdict"),
    [
        # data-building classes and helpers of trusted packages, from the generated catalogue
        ("pandas.core.frame", "DataFrame", GlobalVerdict.ALLOW),
        ("pandas", "RangeIndex", GlobalVerdict.ALLOW),
        ("pandas._libs.internals", "_unpickle_block", GlobalVerdict.ALLOW),
        ("numpy", "float64", GlobalVerdict.ALLOW),
        ("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence", GlobalVerdict.ALLOW),
        ("sklearn.metrics._dist_metrics", "newObj", GlobalVerdict.ALLOW),
        ("torch.nn.modules.activation", "ReLU", GlobalVerdict.ALLOW),
        ("datetime", "timezone", GlobalVerdict.ALLOW),
        ("decimal", "Decimal", GlobalVerdict.ALLOW),
        # dangerous surfaces inside the same packages stay denied
        ("pandas", "read_pickle", GlobalVerdict.DENY),  # defined in pandas.io
        ("pandas", "eval", GlobalVerdict.DENY),  # takes an expression
        ("pandas.io.pytables", "HDFStore", GlobalVerdict.DENY),
        ("numpy.f2py", "compile", GlobalVerdict.DENY),
        ("torch.hub", "load", GlobalVerdict.DENY),
        ("torch.utils.cpp_extension", "load_inline", GlobalVerdict.DENY),
        ("scipy.io", "loadmat", GlobalVerdict.DENY),
        ("sklearn.utils.parallel", "Parallel", GlobalVerdict.DENY),
        ("numpy", "memmap", GlobalVerdict.DENY),
        # functions of trusted packages: a warning while only referenced (escalated when called)
        ("numpy", "mean", GlobalVerdict.DATA),
        ("torch.nn.functional", "relu", GlobalVerdict.DATA),
        # a class-shaped name of a trusted package the catalogue lacks (another version): a warning
        ("sklearn.ensemble._forest", "FutureForestClassifier", GlobalVerdict.DATA),
        # unknown packages: dangerous-looking names deny, the rest are unknown
        ("mytools.io", "load_model", GlobalVerdict.DENY),
        ("acme.jobs", "spawn_worker", GlobalVerdict.DENY),
        ("acme.model", "Net", GlobalVerdict.UNKNOWN),
        ("sklearn_extra.cluster", "KMedoids", GlobalVerdict.UNKNOWN),  # not a trusted package
    ],
)
def test_judgement_by_what_and_where(module: str, name: str, verdict: GlobalVerdict) -> None:
    assert judge_global(module, name).verdict is verdict, judge_global(module, name)


def test_a_referenced_function_escalates_once_the_pickle_calls_it() -> None:
    j = judge_global("numpy", "mean")
    assert j.final([]) == (GlobalVerdict.DATA, j.reason)
    assert j.final(["REDUCE"])[0] is GlobalVerdict.UNKNOWN


def test_a_path_taking_constructor_is_allowed_for_newobj_and_denied_for_reduce() -> None:
    # xgboost.core.Booster(model_file=...) reads a file; Booster.__new__ + __setstate__ does not
    j = judge_global("xgboost.core", "Booster")
    assert j.final(["NEWOBJ", "BUILD"])[0] is GlobalVerdict.ALLOW
    verdict, reason = j.final(["REDUCE"])
    assert verdict is GlobalVerdict.DENY and "model_file" in reason


def test_calling_a_trusted_function_in_a_pickle_blocks() -> None:
    # Given a pickle that calls numpy.mean (a real function, harmless, but nothing a model file calls)
    report = scan_bytes(call_global_p0("numpy", "mean", "1"), "m.pkl")
    # Then it is unknown code, blocking
    assert RuleId.CODE_UNKNOWN in rules_of(report), report.findings


def test_a_function_handed_to_a_rebuild_helper_counts_as_called() -> None:
    # Given torch._tensor._rebuild_from_type_v2(numpy.mean, ...): the helper calls its first argument
    data = (
        proto(4) + su("torch._tensor") + su("_rebuild_from_type_v2") + b"\x93"  # STACK_GLOBAL
        + b"(" + su("numpy") + su("mean") + b"\x93"  # MARK, the function
        + b"N)}t" + b"R."  # None, (), {}, TUPLE; REDUCE, STOP
    )  # fmt: skip
    report = scan_bytes(data, "m.pkl")
    # Then numpy.mean is reported as unknown code (called), not as a mere data reference
    unknown = [f for f in report.findings if f.rule == RuleId.CODE_UNKNOWN]
    assert any(f.detail.get("global") == "numpy.mean" for f in unknown), report.findings


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_standard_library_value_types_are_clean(protocol: int) -> None:
    # Given the value types the issue lists, pickled by the standard library
    values = [
        datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC), datetime.date(2024, 1, 2),
        datetime.time(1, 2), datetime.timedelta(days=1), datetime.timezone(datetime.timedelta(hours=2)),
        decimal.Decimal("1.5"), fractions.Fraction(1, 3), uuid.UUID(int=7), complex(1, 2), range(3),
        slice(1, 2), collections.OrderedDict(a=1), collections.defaultdict(list, a=[1]),
        collections.Counter("aab"), collections.deque([1]), bytearray(b"x"), {1, 2}, frozenset({3}),
    ]  # fmt: skip
    report = scan_bytes(pickle.dumps(values, protocol=protocol), "values.pkl")
    evaluation = evaluate(report, content_safety_group(), ArtifactMetadata())
    # Then the verdict is ALLOWED with no findings at all
    assert evaluation.verdict is Verdict.ALLOWED, report.findings


def test_the_catalogue_was_generated_from_the_pinned_library_versions() -> None:
    # The committed catalogue records the versions it was generated from; after a pin bump it must be
    # regenerated (scripts/gen_trusted_globals.py), or names of the new version would be judged blind.
    recorded = catalogue()["versions"]
    assert catalogue()["globals"], "trusted_globals.json missing or empty"
    for package, dist in (("numpy", "numpy"), ("sklearn", "scikit-learn"), ("pandas", "pandas")):
        try:
            installed = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:  # the Lambda-runtime venv has no ML libraries
            continue
        assert recorded[package] == installed, "run scripts/gen_trusted_globals.py"
