"""Samples for the pickle-family scanners, built in code: malicious by hand, benign with the real libraries.

Malicious payloads are harmless (`echo pwned`) and written as raw opcodes (or, where a real serializer
must frame them, as an object whose __reduce__ *names* os.system; pickling it runs nothing). Nothing here
is ever loaded: the scanners only read bytes. Benign samples come from torch, numpy, scikit-learn and
joblib themselves, so the tests prove the scanners stay quiet on the files users really have.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import struct
import zipfile
from collections.abc import Callable
from functools import cache
from typing import Any

from modelshield.models import RuleId, ScanReport
from modelshield.scanning import scan_stream
from modelshield.scanning.registry import Limits

PAYLOAD = "echo pwned"
PROBLEM_RULES = {RuleId.CODE_EXEC, RuleId.CODE_UNKNOWN, RuleId.MALFORMED, RuleId.SCAN_INCOMPLETE}


def scan_bytes(data: bytes, name: str = "sample.bin", limits: Limits | None = None) -> ScanReport:
    return scan_stream(io.BytesIO(data), name, limits=limits)


def rules_of(report: ScanReport) -> set[RuleId]:
    return {f.rule for f in report.findings}


def globals_flagged(report: ScanReport, rule: RuleId = RuleId.CODE_EXEC) -> set[str]:
    return {str(f.detail.get("global")) for f in report.findings if f.rule == rule and "global" in f.detail}


# -- opcode builders -------------------------------------------------------------------------------------
def su(s: str) -> bytes:
    """SHORT_BINUNICODE s, MEMOIZE."""
    raw = s.encode()
    return b"\x8c" + bytes([len(raw)]) + raw + b"\x94"


def bu(s: str) -> bytes:
    """BINUNICODE s (protocol 2/3 spelling)."""
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def p0_string(s: str) -> bytes:
    return b"S'" + s.encode() + b"'\n"


def proto(n: int) -> bytes:
    return b"\x80" + bytes([n])


def call_global_p0(module: str, name: str, arg: str = PAYLOAD) -> bytes:
    """Protocol 0: GLOBAL module name, (arg), REDUCE."""
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n(" + p0_string(arg) + b"tR."


def call_global_p4(module: str, name: str, arg: str = PAYLOAD) -> bytes:
    """Protocol 4: STACK_GLOBAL from literal strings, then REDUCE with a 1-tuple."""
    return proto(4) + su(module) + su(name) + b"\x93\x94" + su(arg) + b"\x85\x94R\x94."


# -- malicious: every way to import and call -----------------------------------------------------------
def global_os_system() -> bytes:
    return call_global_p0("os", "system")


def stack_global_via_memo() -> bytes:
    """Module and name memoized, popped, then fetched back with BINGET before STACK_GLOBAL."""
    return (
        proto(4)
        + su("os")  # memo 0
        + b"0"  # POP
        + su("system")  # memo 1
        + b"0"
        + su("harmless")  # memo 2, left on the stack as a decoy
        + b"h\x00h\x01\x93"  # BINGET 0, BINGET 1, STACK_GLOBAL
        + su(PAYLOAD)
        + b"\x85R."
    )


def stack_global_via_binput() -> bytes:
    """Protocol 2 style: BINPUT / LONG_BINPUT / LONG_BINGET and DUP shuffles."""
    return (
        proto(2)
        + bu("subprocess")
        + b"q\x07"  # BINPUT 7
        + b"0"
        + bu("getoutput")
        + b"r\x00\x01\x00\x00"  # LONG_BINPUT 256
        + b"0"
        + b"h\x07"
        + b"j\x00\x01\x00\x00"  # LONG_BINGET 256
        + b"\x93"
        + bu(PAYLOAD)
        + b"\x85R."
    )


def memoize_numbering_trick() -> bytes:
    """BINPUT at a scattered index shifts MEMOIZE numbering; a naive counter resolves the wrong name."""
    return (
        proto(4)
        + b"\x8c\x08builtins"
        + b"q\x05"  # BINPUT 5: memo has {5}, len 1
        + b"\x8c\x02os"
        + b"\x94"  # MEMOIZE -> index len(memo) == 1 (a naive counter says 0)
        + b"\x8c\x06system\x94"  # MEMOIZE -> 2
        + b"h\x01h\x02\x93"  # os.system
        + su(PAYLOAD)
        + b"\x85R."
    )


def inst_opcode() -> bytes:
    return b"(" + p0_string(PAYLOAD) + b"ios\nsystem\n."


def obj_opcode() -> bytes:
    return b"(cos\nsystem\n" + p0_string(PAYLOAD) + b"o."


def newobj_opcode() -> bytes:
    return proto(2) + b"csubprocess\nPopen\n" + bu(PAYLOAD) + b"\x85\x81."


def newobj_ex_opcode() -> bytes:
    return proto(4) + su("subprocess") + su("Popen") + b"\x93" + su(PAYLOAD) + b"\x85}\x92."


def ext_opcode(code: int = 0xF0) -> bytes:
    return proto(2) + b"\x82" + bytes([code]) + bu(PAYLOAD) + b"\x85R."


def build_setstate() -> bytes:
    """An instance of a denied class whose state BUILD sets (reaching __setstate__)."""
    return proto(2) + b"csubprocess\nPopen\n)\x81}" + bu("args") + bu(PAYLOAD) + b"sb."


def build_on_global() -> bytes:
    """BUILD applied to an allowed class itself: monkey-patching its attributes."""
    return proto(2) + b"ccollections\nOrderedDict\n}" + bu("__reduce__") + b"Nsb."


def evil_after_benign_stop() -> bytes:
    return pickle.dumps({"weights": [1, 2, 3]}, protocol=4) + global_os_system()


def two_evil_pickles() -> bytes:
    return call_global_p4("subprocess", "check_output") + global_os_system()


def garbage_after_stop() -> bytes:
    return pickle.dumps([1, 2], protocol=2) + b"\x00\x01garbage"


def int_fools_pickletools() -> bytes:
    """`I0x10` loads (int(x, 0)) but pickletools.genops rejects it; a genops-based scanner stops early."""
    return b"I0x10\n0" + global_os_system()


def unresolvable_stack_global() -> bytes:
    """Module name produced by a call (string building at load time): cannot be traced statically."""
    return (
        proto(4)
        + su("_codecs")
        + su("encode")
        + b"\x93"
        + su("os")
        + su("latin-1")
        + b"\x86R"  # _codecs.encode('os', 'latin-1') -> a computed value
        + su("system")
        + b"\x93"
        + su(PAYLOAD)
        + b"\x85R."
    )


def long_string_stack_global() -> bytes:
    name = "a" * 300
    return proto(4) + su("os") + b"X" + struct.pack("<I", len(name)) + name.encode() + b"\x93."


def dunder_traversal() -> bytes:
    return proto(4) + su("collections") + su("OrderedDict.__init__.__globals__") + b"\x93."


def alias_builtin_eval() -> bytes:
    return b"c__builtin__\neval\n(" + p0_string("print(1)") + b"tR."


def alias_commands() -> bytes:
    return call_global_p0("commands", "getoutput")


def whitespace_module() -> bytes:
    return b"cos \n system\n(" + p0_string(PAYLOAD) + b"tR."


def lying_frame() -> bytes:
    body = su("os") + su("system") + b"\x93" + su(PAYLOAD) + b"\x85R."
    return proto(4) + b"\x95" + struct.pack("<Q", 3) + body  # frame says 3 bytes, holds more


def frame_beyond_end() -> bytes:
    return proto(4) + b"\x95" + struct.pack("<Q", 10_000) + b"N."


def out_of_band_buffer() -> bytes:
    return proto(5) + b"\x97\x98."


def truncated_pickle() -> bytes:
    return global_os_system()[:-3]


def invalid_opcode_after_payload() -> bytes:
    return global_os_system()[:-1] + b"\xff"


def stack_underflow() -> bytes:
    return proto(2) + b"R."


def unknown_global() -> bytes:
    return call_global_p4("mypackage.evil", "run")


def denied_call(module: str, name: str) -> bytes:
    return call_global_p4(module, name)


# (module, name) pairs for the denylist sweep: each one is a way to run code, touch files or the network
DENIED_CALLS: list[tuple[str, str]] = [
    ("runpy", "run_path"),
    ("pty", "spawn"),
    ("code", "InteractiveInterpreter"),
    ("pdb", "run"),
    ("timeit", "timeit"),
    ("cProfile", "run"),
    ("pydoc", "pipepager"),
    ("importlib", "import_module"),
    ("importlib.util", "spec_from_file_location"),
    ("operator", "attrgetter"),
    ("operator", "methodcaller"),
    ("functools", "partial"),
    ("builtins", "getattr"),
    ("builtins", "exec"),
    ("builtins", "__import__"),
    ("ctypes", "CDLL"),
    ("pip", "main"),
    ("webbrowser", "open"),
    ("shutil", "rmtree"),
    ("asyncio", "create_subprocess_shell"),
    ("torch", "load"),
    ("torch.hub", "load"),
    ("torch.fx.graph_module", "reduce_graph_module"),
    ("numpy", "load"),
    ("numpy.lib.npyio", "load"),
    ("pickle", "loads"),
    ("_pickle", "loads"),
    ("dill", "loads"),
    ("marshal", "loads"),
    ("types", "FunctionType"),
    ("os.path", "join"),
    ("posix", "system"),
    ("nt", "system"),
    ("subprocess", "Popen"),
    ("sys", "exit"),
    ("socket", "create_connection"),
    ("urllib.request", "urlopen"),
    ("joblib", "load"),
    ("io", "open"),
    ("pathlib", "Path"),
    ("tempfile", "mkdtemp"),
    ("multiprocessing", "Process"),
    ("threading", "Thread"),
    ("signal", "raise_signal"),
    ("glob", "glob"),
    ("copyreg", "add_extension"),
    ("logging.config", "dictConfig"),
]


def getattr_chain() -> bytes:
    """builtins.getattr(<imported module object>, 'system')(PAYLOAD)."""
    return (
        proto(4)
        + su("builtins")
        + su("getattr")
        + b"\x93"
        + su("os")
        + su("path")
        + b"\x93"  # any object will do; the chain is the point
        + su("system")
        + b"\x86R"
        + su(PAYLOAD)
        + b"\x85R."
    )


# -- containers carrying a payload ------------------------------------------------------------------------
class NamesOsSystem:
    """Pickles as os.system(PAYLOAD) (its __reduce__ only names the function; nothing runs)."""

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[str]]:
        return (os.system, (PAYLOAD,))


def torch_state_dict_zip() -> bytes:
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.getvalue()


def torch_zip_with_member(name: str, data: bytes, *, base: bytes | None = None) -> bytes:
    buf = io.BytesIO(base if base is not None else torch_state_dict_zip())
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr(name, data)
    return buf.getvalue()


def torch_zip_evil_member() -> bytes:
    return torch_zip_with_member("archive/extra/evil.pkl", global_os_system())


def torch_zip_evil_unnamed_member() -> bytes:
    """A pickle under a name that does not end in .pkl: found by sniffing its content."""
    return torch_zip_with_member("archive/extra/blob", call_global_p4("os", "system"))


def torch_zip_evil_data_pkl() -> bytes:
    """data.pkl itself replaced by a payload (the classic attack)."""
    members: dict[str, bytes] = {}
    with zipfile.ZipFile(io.BytesIO(torch_state_dict_zip())) as zf:
        for info in zf.infolist():
            members[info.filename] = zf.read(info)
    members["archive/data.pkl"] = global_os_system()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out.getvalue()


def torch_zip_duplicate_data_pkl() -> bytes:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch_zip_with_member("archive/data.pkl", global_os_system())


def without_central_directory(zip_bytes: bytes) -> bytes:
    cd = zip_bytes.rfind(b"PK\x01\x02")
    first_cd = zip_bytes.find(b"PK\x01\x02")
    return zip_bytes[: first_cd if first_cd >= 0 else cd]


def legacy_torch(main: bytes | None = None) -> bytes:
    """torch.save(..., _use_new_zipfile_serialization=False); or the same frame around `main`."""
    import torch

    if main is None:
        buf = io.BytesIO()
        torch.save(torch.nn.Linear(3, 2).state_dict(), buf, _use_new_zipfile_serialization=False)
        return buf.getvalue()
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    return (
        magic
        + pickle.dumps(1001, protocol=2)
        + pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2)
        + main
        + pickle.dumps([], protocol=2)
    )


def torchscript_archive() -> bytes:
    import torch

    model = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.ReLU()))
    buf = io.BytesIO()
    torch.jit.save(model, buf)
    return buf.getvalue()


def torchscript_with_code(code: str) -> bytes:
    base = torchscript_archive()
    with zipfile.ZipFile(io.BytesIO(base)) as zf:
        prefix = zf.namelist()[0].split("/")[0]
    return torch_zip_with_member(f"{prefix}/code/__torch__/evil.py", code.encode(), base=base)


class UserNet:
    """Stands in for a user's own nn.Module subclass (any class outside the allowlist)."""

    def __init__(self) -> None:
        self.weights = [1.0, 2.0]


def torch_full_module_user_class() -> bytes:
    import torch

    class_ref = UserNet()
    buf = io.BytesIO()
    torch.save({"model": class_ref}, buf)
    return buf.getvalue()


def torch_full_module_builtin_layers() -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)), buf)
    return buf.getvalue()


def torch_optimizer_state() -> bytes:
    import torch

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    return buf.getvalue()


def torch_misc_objects() -> bytes:
    import torch

    obj = {
        "i8": torch.tensor([1, 2], dtype=torch.int8),
        "bf16": torch.zeros(2, dtype=torch.bfloat16),
        "dev": torch.device("cpu"),
        "dtype": torch.float16,
        "size": torch.Size([2, 3]),
        "param": torch.nn.Parameter(torch.ones(2)),
    }
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@cache
def _sklearn_models() -> dict[str, Any]:
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    x = rng.random((60, 4))
    y = (x[:, 0] > 0.5).astype(int)
    models: dict[str, Any] = {
        "logistic": LogisticRegression(),
        "forest": RandomForestClassifier(n_estimators=3, random_state=0),
        "pipeline": Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())]),
    }
    for model in models.values():
        model.fit(x, y)
    return models


def sklearn_pickle(name: str, protocol: int) -> bytes:
    return pickle.dumps(_sklearn_models()[name], protocol=protocol)


def sklearn_joblib(name: str, compress: int | tuple[str, int] = 0) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump(_sklearn_models()[name], buf, compress=compress)
    return buf.getvalue()


def joblib_dump(obj: Any, compress: int | tuple[str, int] = 0) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump(obj, buf, compress=compress)
    return buf.getvalue()


def joblib_file(obj: Any, path: str, compress: int | tuple[str, int] = 0) -> bytes:
    """joblib.dump to a real file (seekable: joblib >= 1.2 then writes alignment padding)."""
    import joblib

    joblib.dump(obj, path, compress=compress)
    with open(path, "rb") as fh:
        return fh.read()


def joblib_with_payload() -> bytes:
    import numpy as np

    return joblib_dump({"w": np.arange(6.0).reshape(2, 3), "evil": NamesOsSystem()})


def npy_bytes(array: Any, allow_pickle: bool = False) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


def npy_object_with_payload() -> bytes:
    import numpy as np

    arr = np.empty(2, dtype=object)
    arr[0] = 1
    arr[1] = NamesOsSystem()
    return npy_bytes(arr, allow_pickle=True)


def npz_bytes(compressed: bool = False, **arrays: Any) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def npz_with_payload() -> bytes:
    import numpy as np

    arr = np.empty(1, dtype=object)
    arr[0] = NamesOsSystem()
    return npz_bytes(weights=np.ones(3), evil=arr)


def plain_data_pickles() -> dict[str, bytes]:
    data = {"a": [1, 2.5, "x", None, True], "b": (1, 2), "c": {"nested": [b"bytes", bytearray(b"ba")]}}
    return {f"protocol{p}": pickle.dumps(data, protocol=p) for p in range(6)}


# -- a reference extractor (tests only): genops plus a string stack/memo, for benign files ---------------
def reference_globals(data: bytes) -> list[str]:
    """Globals a benign pickle imports, computed independently of the scanner with pickletools."""
    out: list[str] = []
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    marks: list[int] = []
    for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
        name = op.name
        if name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            stack.append(arg)
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = stack[-1]
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            stack.append(memo[arg])
        elif name in ("GLOBAL", "INST"):
            out.append(arg.replace(" ", "."))
            if name == "INST":
                del stack[marks.pop() :]
            stack.append(None)
        elif name == "STACK_GLOBAL":
            n, m = stack.pop(), stack.pop()
            out.append(f"{m}.{n}")
            stack.append(None)
        elif name == "MARK":
            marks.append(len(stack))
        elif name == "STOP":
            break
        else:
            before = op.stack_before
            if pickletools.markobject in before:
                del stack[marks.pop() :]
                below = before.index(pickletools.markobject)
                if below:
                    del stack[len(stack) - below :]
            elif before:
                del stack[len(stack) - len(before) :]
            stack.extend([None] * len(op.stack_after))
    return out


__all__ = [name for name in dir() if not name.startswith("_")]


def joblib_polyglot(payload: bytes | None = None) -> bytes:
    """A NumpyArrayWrapper (no alignment padding) whose 'array bytes' are opcodes to a plain pickle.load."""
    evil = payload if payload is not None else b"cos\nsystem\n(" + p0_string(PAYLOAD) + b"tR0"
    state = (
        b"}("
        + bu("subclass")
        + b"cnumpy\nndarray\n"
        + bu("shape")
        + b"J"
        + struct.pack("<i", len(evil))
        + b"\x85"
        + bu("order")
        + bu("C")
        + bu("dtype")
        + b"cnumpy\ndtype\n("
        + bu("u1")
        + b"\x89\x88tR(K\x03"
        + bu("|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        + bu("allow_mmap")
        + b"\x89u"
    )
    return proto(2) + b"cjoblib.numpy_pickle\nNumpyArrayWrapper\n)\x81" + state + b"b" + evil + b"."
