"""The allow/deny policy for imported globals: data with a reason per entry, judged after normalising."""

from __future__ import annotations

import pytest
from modelshield.scanning.pickle_globals import (
    ALLOW_GLOBALS,
    DENY_GLOBALS,
    DENY_MODULES,
    GlobalVerdict,
    judge_global,
)


@pytest.mark.parametrize("table", [DENY_MODULES, DENY_GLOBALS, ALLOW_GLOBALS])
def test_every_entry_has_a_reason(table: dict[str, str]) -> None:
    assert all(isinstance(reason, str) and len(reason) > 10 for reason in table.values())


@pytest.mark.parametrize(
    ("module", "name", "verdict"),
    [
        ("os", "system", GlobalVerdict.DENY),
        ("os.path", "join", GlobalVerdict.DENY),  # os is denied wholesale, submodules included
        ("posix", "system", GlobalVerdict.DENY),
        ("__builtin__", "eval", GlobalVerdict.DENY),  # Python 2 alias mapped like the unpickler does
        ("__builtin__", "set", GlobalVerdict.ALLOW),
        ("commands", "getoutput", GlobalVerdict.DENY),  # commands -> subprocess
        ("cPickle", "loads", GlobalVerdict.DENY),
        ("  os ", " system\n", GlobalVerdict.DENY),  # whitespace stripped
        ("builtins", "print", GlobalVerdict.UNKNOWN),  # harmless but not vouched for
        ("builtins", "type", GlobalVerdict.DENY),
        ("torch._utils", "_rebuild_tensor_v2", GlobalVerdict.ALLOW),
        ("torch", "FloatStorage", GlobalVerdict.ALLOW),
        ("torch", "FloatStorage.from_file", GlobalVerdict.DENY),  # exact names only; its name says it opens
        ("torch._utils", "_rebuild_tensor_v2.__globals__", GlobalVerdict.DENY),  # dunder traversal
        ("torch", "__dict__", GlobalVerdict.DENY),
        ("torch", "load", GlobalVerdict.DENY),
        ("torch.serialization", "_get_layout", GlobalVerdict.ALLOW),  # exact allow beats module deny
        ("torch.serialization", "load", GlobalVerdict.DENY),
        ("torch.jit._pickle", "build_intlist", GlobalVerdict.ALLOW),
        ("torch.jit", "load", GlobalVerdict.DENY),
        ("sklearn.linear_model._logistic", "LogisticRegression", GlobalVerdict.ALLOW),
        ("sklearn.tree._tree", "Tree", GlobalVerdict.ALLOW),
        ("sklearn.linear_model._base", "make_dataset", GlobalVerdict.DATA),  # a function: warns if uncalled
        ("sklearn.datasets", "fetch_openml", GlobalVerdict.DENY),
        ("joblib.numpy_pickle", "NumpyArrayWrapper", GlobalVerdict.ALLOW),
        ("joblib", "load", GlobalVerdict.DENY),
        ("numpy", "load", GlobalVerdict.DENY),
        ("numpy._core.multiarray", "_reconstruct", GlobalVerdict.ALLOW),
        ("copyreg", "_reconstructor", GlobalVerdict.ALLOW),
        ("copyreg", "add_extension", GlobalVerdict.DENY),
        ("functools", "partial", GlobalVerdict.DENY),
        ("operator", "itemgetter", GlobalVerdict.DENY),
        ("__main__", "MyModel", GlobalVerdict.UNKNOWN),
        ("posixpath", "join", GlobalVerdict.UNKNOWN),
    ],
)
def test_judgements(module: str, name: str, verdict: GlobalVerdict) -> None:
    assert judge_global(module, name).verdict is verdict


def test_torchscript_classes_are_allowed_only_inside_torchscript() -> None:
    assert judge_global("__torch__.model", "Net").verdict is GlobalVerdict.UNKNOWN
    assert judge_global("__torch__.model", "Net", torchscript=True).verdict is GlobalVerdict.ALLOW


def test_judgement_names_the_normalised_global_and_a_reason() -> None:
    j = judge_global("__builtin__", "eval")
    assert j.name == "builtins.eval"
    assert "code" in j.reason
