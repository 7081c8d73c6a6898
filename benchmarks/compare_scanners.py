"""Compare ModelShield with picklescan, modelscan, fickling and ModelAudit, side by side in one run.

Two measurements, both written to docs/scanner-comparison.md:

* Detection on the test corpus (tests/corpus/*.py build malicious samples with harmless payloads and
  benign ones with the real libraries): per tool, what it detected, missed and falsely flagged.
* Large files (a 1 GiB PyTorch checkpoint, a ~200 MB opcode-dense pickle, a 2 GiB safetensors file):
  per tool, wall time, peak memory and verdict.

Every external tool runs from its own virtualenv under benchmarks/.venvs/<tool>/ (created and pinned by
its adapter in benchmarks/tools/), one file per process. Wall time and peak RSS come from os.wait4 in a
small launcher (tools/_measure.py: ru_maxrss in KiB on Linux, including any children the tool waited
for). Tools run one at a time for the large files, so they do not compete for the two cores. Nothing
here loads a scanned file: the only code that touches the samples is the tools under test. Raw results
go to benchmarks/.data/compare/results.json, from which the report can be rendered again.

    KERAS_BACKEND=torch .venv/bin/python benchmarks/compare_scanners.py          # the run the docs quote
    KERAS_BACKEND=torch .venv/bin/python benchmarks/compare_scanners.py --quick  # 64 MiB / 20 MB / 256 MiB
    .venv/bin/python benchmarks/compare_scanners.py --from-results benchmarks/.data/compare/results.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import inspect
import json
import os
import platform
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from tools import Adapter, Classification, Outcome, ToolOutput  # noqa: E402
from tools import fickling as fickling_tool  # noqa: E402
from tools import modelaudit as modelaudit_tool  # noqa: E402
from tools import modelscan as modelscan_tool  # noqa: E402
from tools import modelshield as modelshield_tool  # noqa: E402
from tools import picklescan as picklescan_tool  # noqa: E402

ADAPTERS: tuple[Adapter, ...] = (
    modelshield_tool.ADAPTER,
    picklescan_tool.ADAPTER,
    modelscan_tool.ADAPTER,
    fickling_tool.ADAPTER,
    modelaudit_tool.ADAPTER,
)
DATA = BENCH / ".data"
VENVS = BENCH / ".venvs"
DOC = REPO / "docs" / "scanner-comparison.md"
CORPUS_MODULES = (REPO / "tests" / "corpus" / "pickle_family.py", REPO / "tests" / "corpus" / "formats.py")
BEGIN, END = "<!-- BEGIN GENERATED: benchmarks/compare_scanners.py -->", "<!-- END GENERATED -->"

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
MB = 1_000_000
FULL_SIZES = {"torch": 1 * GiB, "pickle": 200 * MB, "safetensors": 2 * GiB}
QUICK_SIZES = {"torch": 64 * MiB, "pickle": 20 * MB, "safetensors": 256 * MiB}
OUTPUT_CAP = 4 * MiB  # of each captured stdout/stderr, enough for any report we parse


# -- measuring one process -------------------------------------------------------------------------
@dataclass(frozen=True)
class Measurement:
    returncode: int
    wall_seconds: float
    max_rss_kib: int
    timed_out: bool
    stdout: str
    stderr: str


LAUNCHER = BENCH / "tools" / "_measure.py"
LAUNCHER_PYTHON = os.path.realpath(sys.executable)  # the real interpreter, not a shim or venv wrapper
LAUNCHER_GRACE = 30.0  # extra seconds before the parent gives up on the launcher itself


def run_measured(
    argv: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float
) -> Measurement:
    """Run argv to completion (or kill its process group at `timeout`), with wall time and peak RSS.

    The measuring is done by tools/_measure.py, a ~10 MiB launcher, because a child forked from this
    (large) process would inherit our RSS as its starting peak. Output goes to files, not pipes, so a
    chatty tool can never block on a full pipe and skew the timing.
    """
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory(prefix="measure-") as tmp,
    ):
        report = Path(tmp) / "measure.json"
        launcher = [LAUNCHER_PYTHON, "-S", "-I", str(LAUNCHER), str(report), str(timeout), "--", *argv]
        proc = subprocess.Popen(
            launcher, cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            proc.wait(timeout=timeout + LAUNCHER_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        measured = _read_json(report)
        if not measured:
            raise RuntimeError(
                f"launcher reported nothing (exit {proc.returncode}): {_tail(_read_capped(err))}"
            )
        return Measurement(
            returncode=int(measured["returncode"]),
            wall_seconds=float(measured["wall_seconds"]),
            max_rss_kib=int(measured["max_rss_kib"]),
            timed_out=bool(measured["timed_out"]),
            stdout=_read_capped(out),
            stderr=_read_capped(err),
        )


def _read_capped(stream: BinaryIO) -> str:
    stream.seek(0)
    return stream.read(OUTPUT_CAP).decode("utf-8", errors="replace")


# -- the tools -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToolStatus:
    name: str
    venv: Path
    version: str = ""
    ready: bool = False
    reason: str = ""  # why not ready ("not run: ...")
    packages: tuple[str, ...] = ()


def venv_of(adapter: Adapter) -> Path:
    return adapter.venv or VENVS / adapter.name


def ensure_tool(adapter: Adapter, *, install: bool, python: str) -> ToolStatus:
    """Make sure the tool's venv exists with its pinned packages; report why not if it cannot.

    A venv whose pins changed, or that no longer imports its tool (files removed under it), is rebuilt
    from scratch rather than patched, so what runs is exactly the pinned set.
    """
    venv = venv_of(adapter)
    marker = venv / ".compare-installed"
    wanted = "\n".join(adapter.packages)
    entry_point = Path(adapter.build_command(venv, Path("probe"), Path("."))[0])
    healthy = (
        marker.is_file()
        and marker.read_text() == wanted
        and os.access(entry_point, os.X_OK)
        and bool(_version(venv, adapter.distribution))
    )
    if adapter.packages and not healthy:
        if not install:
            return ToolStatus(adapter.name, venv, reason="not installed (run without --no-install)")
        if venv.is_relative_to(VENVS) and venv.exists():
            shutil.rmtree(venv)
        print(f"  installing {adapter.name}: {' '.join(adapter.packages)}", flush=True)
        reason = _install(venv, adapter.packages, python)
        if reason:
            return ToolStatus(adapter.name, venv, reason=f"install failed: {reason}")
        marker.write_text(wanted)
    version = _version(venv, adapter.distribution)
    if not version:
        return ToolStatus(adapter.name, venv, reason=f"{adapter.distribution} not importable in {venv}")
    if adapter.name == "modelshield":
        version += _git_revision()
    return ToolStatus(adapter.name, venv, version=version, ready=True, packages=tuple(adapter.packages))


def _install(venv: Path, packages: Sequence[str], python: str) -> str:
    if not (venv / "bin" / "python").exists():
        made = subprocess.run([python, "-m", "venv", str(venv)], capture_output=True, text=True)
        if made.returncode:
            return _tail(made.stderr)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *packages],
        capture_output=True,
        text=True,
    )
    return _tail(pip.stderr) if pip.returncode else ""


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip() and "WARNING: Location" not in line]
    return lines[-1][:200] if lines else "unknown error"


def _version(venv: Path, distribution: str) -> str:
    if not (venv / "bin" / "python").exists():
        return ""
    probe = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            f"import importlib.metadata as m; print(m.version({distribution!r}))",
        ],
        capture_output=True,
        text=True,
    )
    return probe.stdout.strip() if probe.returncode == 0 else ""


def _git_revision() -> str:
    rev = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    )
    if rev.returncode:
        return ""
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "layers"],
        capture_output=True,
        text=True,
    )
    return f" (git {rev.stdout.strip()}{' + uncommitted changes' if dirty.stdout.strip() else ''})"


# -- samples ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    name: str  # file name, unique within its kind
    path: Path
    kind: str  # "malicious", "benign" or "large"
    description: str = ""
    size: int = 0
    group: str = ""  # the corpus module it came from ("pickle_family", "formats")


@dataclass(frozen=True)
class GeneratedFile:
    name: str  # relative path; one folder level allowed ("savedmodel/saved_model.pb")
    data: bytes
    description: str = ""
    companions: tuple[tuple[str, bytes], ...] = ()  # written next to it (external weights), not scanned


@dataclass(frozen=True)
class CorpusEntry:
    """One sample built by calling the corpus module's own builders (their logic is not copied here)."""

    kind: str  # "malicious" or "benign"
    name: str
    build: Callable[[ModuleType], bytes | dict[str, bytes]]  # dict: first key scanned, rest companions
    description: str


def _onnx_external_dir(formats: ModuleType) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(formats.onnx_benign_with_external_dir(Path(tmp)))
        return {"model.onnx": model.read_bytes(), "weights.bin": (model.parent / "weights.bin").read_bytes()}


def _h5_lambda(formats: ModuleType) -> bytes:
    return formats.h5_with_attrs({"model_config": formats.keras2_lambda_config(), "keras_version": "2.15.0"})


def _zip_hidden_pickle(formats: ModuleType) -> bytes:
    return formats.zip_without_central_directory()


# tests/corpus/formats.py exposes builders by format, not malicious_*/benign_* generators, so this table
# says which call makes which sample. Kept to clear-cut cases: a sample is malicious when loading or
# unpacking it runs code, reaches outside the model, or hides a backdoor; borderline builders
# (a 20 MiB "bomb", renamed zip members, duplicate names) stay out so "N malicious" means something.
FORMAT_SAMPLES: tuple[CorpusEntry, ...] = (
    # -- malicious -----------------------------------------------------------------------------------
    CorpusEntry("malicious", "keras_lambda.keras", lambda f: f.keras_lambda_file(),
                "Keras 3 .keras with a Lambda layer (marshalled bytecode runs on load)"),
    CorpusEntry("malicious", "keras_nested_lambda.keras", lambda f: f.keras_nested_lambda(),
                "Lambda hidden in a Functional model inside TimeDistributed inside Sequential"),
    CorpusEntry("malicious", "keras_safe_mode_escape.keras", lambda f: f.keras_safe_mode_escape(),
                "Dense activation = builtins.exec referenced as a function (safe_mode escape)"),
    CorpusEntry("malicious", "keras_get_file_gadget.keras", lambda f: f.keras_get_file_gadget(),
                "keras.utils.get_file as a function reference (CVE-2025-8747 style file write)"),
    CorpusEntry("malicious", "keras_lookup_vocabulary_path.keras", lambda f: f.keras_lookup_vocabulary_path(),
                "StringLookup vocabulary = /etc/passwd: Keras reads a file outside the model on load"),
    CorpusEntry("malicious", "keras_fetched_vocabulary.keras", lambda f: f.keras_fetched_file(),
                "TextVectorization vocabulary = an https URL: fetched on load"),
    CorpusEntry("malicious", "hf_repo_remote_code.tar", lambda f: f.model_repo_with_remote_code(),
                "model repository with config.json auto_map + modeling_evil.py (trust_remote_code runs it)"),
    CorpusEntry("malicious", "keras2_lambda.h5", _h5_lambda,
                "legacy Keras 2 .h5 whose model_config has a Lambda layer"),
    CorpusEntry("malicious", "onnx_where_backdoor.onnx", lambda f: f.onnx_where_backdoor(),
                "ONNX graph: Where(input == trigger) switches the output to fixed logits"),
    CorpusEntry("malicious", "onnx_if_backdoor.onnx", lambda f: f.onnx_if_backdoor(),
                "ONNX graph: If(input[0] > 0.999) returns a constant"),
    CorpusEntry("malicious", "onnx_custom_domain.onnx", lambda f: f.onnx_custom_domain(),
                "ONNX node from a custom op domain (native code must be registered to run it)"),
    CorpusEntry("malicious", "onnx_external_traversal.onnx",
                lambda f: f.onnx_external_data("../../etc/passwd"),
                "ONNX initializer whose external data is ../../etc/passwd"),
    CorpusEntry("malicious", "gguf_ssti.gguf", lambda f: f.gguf_from_writer(f.SSTI_TEMPLATE),
                "GGUF chat template with a Jinja sandbox escape (__class__.__mro__...__subclasses__)"),
    CorpusEntry("malicious", "gguf_ssti_cycler.gguf",
                lambda f: f.gguf_from_writer(f.OBFUSCATED_TEMPLATES["cycler globals"]),
                "GGUF chat template reaching os.popen through cycler.__init__.__globals__"),
    CorpusEntry("malicious", "gguf_ssti_concat.gguf",
                lambda f: f.gguf_from_writer(f.OBFUSCATED_TEMPLATES["concatenated attr"]),
                "GGUF chat template building '__class__' by string concatenation"),
    CorpusEntry("malicious", "ssti_tokenizer/tokenizer_config.json",
                lambda f: f.tokenizer_config(f.SSTI_TEMPLATE),
                "tokenizer_config.json whose chat_template is a Jinja sandbox escape"),
    CorpusEntry("malicious", "safetensors_huge_header.safetensors",
                lambda f: f.safetensors_raw(b"{}", declared=1 << 60),
                "safetensors header length field claims 1 EiB (allocation DoS on naive readers)"),
    CorpusEntry("malicious", "zip_traversal.zip", lambda f: f.zip_traversal(),
                "zip members ../../evil.txt and /etc/cron.d/evil (path traversal on extract)"),
    CorpusEntry("malicious", "zip_symlink.zip", lambda f: f.zip_symlink(),
                "zip member that is a symlink to /etc/passwd"),
    CorpusEntry("malicious", "tar_unsafe.tar", lambda f: f.tar_unsafe(),
                "tar with a symlink to /etc/passwd, a ../ hard link, an absolute path and a device"),
    CorpusEntry("malicious", "zip_pickle_prefix.zip", lambda f: f.zip_with_prefix(),
                "polyglot: an os.system pickle prepended to a valid zip"),
    CorpusEntry("malicious", "zip_no_central_directory.zip", _zip_hidden_pickle,
                "zip cut before its central directory; a local header still holds evil.pkl"),
    CorpusEntry("malicious", "evil.pkl.gz", lambda f: f.compressed("gzip", f.EVIL_PICKLE),
                "gzip of an os.system pickle"),
    CorpusEntry("malicious", "savedmodel_pyfunc/saved_model.pb", lambda f: f.saved_model_pyfunc(),
                "TensorFlow SavedModel graph with a PyFunc op (runs Python)"),
    CorpusEntry("malicious", "savedmodel_fixed_write/saved_model.pb",
                lambda f: f.saved_model_fixed_path_write(),
                "SavedModel SaveV2 to a constant /tmp path (writes outside the model)"),
    # -- benign, made with the real libraries ----------------------------------------------------------
    CorpusEntry("benign", "model.keras", lambda f: f.keras_benign_files()[0],
                "Keras 3 Sequential Dense model, model.save(.keras)"),
    CorpusEntry("benign", "model.h5", lambda f: f.keras_benign_files()[1],
                "the same model saved as legacy .h5"),
    CorpusEntry("benign", "model.onnx", lambda f: f.onnx_benign(),
                "ONNX MatMul/Add/Relu made with onnx.helper"),
    CorpusEntry("benign", "onnx_masked.onnx", lambda f: f.onnx_benign_guard_and_mask(),
                "ONNX with an attention-style mask and a Where activation (legit comparisons)"),
    CorpusEntry("benign", "onnx_external/model.onnx", _onnx_external_dir,
                "ONNX saved by onnx with external weights.bin beside it"),
    CorpusEntry("benign", "model.gguf", lambda f: f.gguf_from_writer(f.BENIGN_CHAT_TEMPLATE),
                "GGUF written by gguf-py with an ordinary chat template"),
    CorpusEntry("benign", "model.safetensors", lambda f: f.safetensors_benign(), "safetensors.numpy.save"),
    CorpusEntry("benign", "tokenizer/tokenizer_config.json",
                lambda f: f.tokenizer_config(f.BENIGN_CHAT_TEMPLATE),
                "tokenizer_config.json with an ordinary chat template"),
    CorpusEntry("benign", "savedmodel/saved_model.pb", lambda f: f.saved_model_benign(),
                "TF2-style SavedModel: MatMul plus the traced save function"),
    CorpusEntry("benign", "model_bundle.zip", lambda f: f.zip_of(f.benign_archive_members()),
                "zip of a model card, config, tokenizer config and safetensors"),
    CorpusEntry("benign", "model_bundle.tar.gz",
                lambda f: f.compressed("gzip", f.tar_of(f.benign_archive_members())),
                "the same members as a .tar.gz"),
)  # fmt: skip


def _denied(module: str, name: str) -> CorpusEntry:
    return CorpusEntry(
        "malicious",
        f"call_{module.replace('.', '_')}_{name}.pkl",
        lambda p: p.denied_call(module, name),
        f"protocol 4 STACK_GLOBAL {module}.{name}('echo pwned') + REDUCE",
    )


def _npy(pickles: ModuleType) -> bytes:
    import numpy as np

    return pickles.npy_bytes(np.arange(12.0, dtype=np.float32).reshape(3, 4))


def _npz(pickles: ModuleType) -> bytes:
    import numpy as np

    return pickles.npz_bytes(compressed=True, weights=np.ones((4, 4)), bias=np.zeros(4, dtype=np.int64))


# The denylist sweep in tests/corpus/pickle_family.py (DENIED_CALLS) also holds calls that are harmless
# on their own (os.path.join, pathlib.Path); these are the ones that run code, touch the network or
# the file system, or load another pickle.
CODE_RUNNING_CALLS = (
    ("runpy", "run_path"), ("pty", "spawn"), ("pdb", "run"), ("timeit", "timeit"), ("cProfile", "run"),
    ("pydoc", "pipepager"), ("builtins", "exec"), ("importlib", "import_module"), ("ctypes", "CDLL"),
    ("pip", "main"), ("webbrowser", "open"), ("shutil", "rmtree"), ("torch", "load"), ("numpy", "load"),
    ("pickle", "loads"), ("marshal", "loads"), ("posix", "system"), ("socket", "create_connection"),
    ("urllib.request", "urlopen"),
)  # fmt: skip

PICKLE_SAMPLES: tuple[CorpusEntry, ...] = (
    # -- malicious: ways to import and call ------------------------------------------------------------
    CorpusEntry("malicious", "global_os_system.pkl", lambda p: p.global_os_system(),
                "protocol 0 GLOBAL os.system + REDUCE"),
    CorpusEntry("malicious", "stack_global_via_memo.pkl", lambda p: p.stack_global_via_memo(),
                "STACK_GLOBAL with module/name fetched back from the memo (BINGET)"),
    CorpusEntry("malicious", "stack_global_via_binput.pkl", lambda p: p.stack_global_via_binput(),
                "protocol 2 BINPUT/LONG_BINGET shuffles to subprocess.getoutput"),
    CorpusEntry("malicious", "memoize_numbering_trick.pkl", lambda p: p.memoize_numbering_trick(),
                "BINPUT at a scattered index shifts MEMOIZE numbering (naive counters resolve 'builtins')"),
    CorpusEntry("malicious", "inst_opcode.pkl", lambda p: p.inst_opcode(), "INST os system"),
    CorpusEntry("malicious", "obj_opcode.pkl", lambda p: p.obj_opcode(), "OBJ on GLOBAL os.system"),
    CorpusEntry("malicious", "newobj_opcode.pkl", lambda p: p.newobj_opcode(), "NEWOBJ subprocess.Popen"),
    CorpusEntry("malicious", "newobj_ex_opcode.pkl", lambda p: p.newobj_ex_opcode(),
                "NEWOBJ_EX subprocess.Popen"),
    CorpusEntry("malicious", "ext_opcode.pkl", lambda p: p.ext_opcode(),
                "EXT1 code resolved through the copyreg extension registry, then REDUCE"),
    CorpusEntry("malicious", "build_setstate.pkl", lambda p: p.build_setstate(),
                "subprocess.Popen instance whose state BUILD sets"),
    CorpusEntry("malicious", "evil_after_benign_stop.pkl", lambda p: p.evil_after_benign_stop(),
                "a benign pickle, then os.system after its STOP (read by multi-pickle loaders)"),
    CorpusEntry("malicious", "two_evil_pickles.pkl", lambda p: p.two_evil_pickles(),
                "two concatenated pickles: subprocess.check_output, then os.system"),
    CorpusEntry("malicious", "int_fools_pickletools.pkl", lambda p: p.int_fools_pickletools(),
                "`I0x10` loads but stops pickletools.genops before the os.system payload"),
    CorpusEntry("malicious", "unresolvable_stack_global.pkl", lambda p: p.unresolvable_stack_global(),
                "module name computed at load time (_codecs.encode) then STACK_GLOBAL .system"),
    CorpusEntry("malicious", "alias_builtin_eval.pkl", lambda p: p.alias_builtin_eval(),
                "__builtin__.eval (Python 2 name mapped by pickle's compat table)"),
    CorpusEntry("malicious", "alias_commands.pkl", lambda p: p.alias_commands(),
                "commands.getoutput (Python 2 name mapped to subprocess)"),
    CorpusEntry("malicious", "lying_frame.pkl", lambda p: p.lying_frame(),
                "FRAME claims 3 bytes but holds an os.system call"),
    CorpusEntry("malicious", "invalid_opcode_after_payload.pkl", lambda p: p.invalid_opcode_after_payload(),
                "os.system + REDUCE, then an invalid opcode (the call runs before the load fails)"),
    CorpusEntry("malicious", "getattr_chain.pkl", lambda p: p.getattr_chain(),
                "builtins.getattr(obj, 'system')(...) chain"),
    *(_denied(module, name) for module, name in CODE_RUNNING_CALLS),
    # -- malicious: containers carrying a payload ---------------------------------------------------------
    CorpusEntry("malicious", "torch_evil_data_pkl.pt", lambda p: p.torch_zip_evil_data_pkl(),
                "PyTorch zip whose data.pkl is replaced by os.system"),
    CorpusEntry("malicious", "torch_duplicate_data_pkl.pt", lambda p: p.torch_zip_duplicate_data_pkl(),
                "PyTorch zip with a second archive/data.pkl member holding os.system"),
    CorpusEntry("malicious", "legacy_torch_evil.pt", lambda p: p.legacy_torch(p.global_os_system()),
                "legacy (non-zip) torch.save framing around an os.system pickle"),
    CorpusEntry("malicious", "joblib_payload.joblib", lambda p: p.joblib_with_payload(),
                "joblib.dump of a dict holding an object that reduces to os.system"),
    CorpusEntry("malicious", "npy_object_payload.npy", lambda p: p.npy_object_with_payload(),
                "NumPy object array (allow_pickle) holding os.system"),
    CorpusEntry("malicious", "npz_object_payload.npz", lambda p: p.npz_with_payload(),
                "NumPy .npz with an object array holding os.system"),
    # -- benign, made with torch / numpy / scikit-learn / joblib ----------------------------------------
    CorpusEntry("benign", "state_dict.pt", lambda p: p.torch_state_dict_zip(),
                "torch.save(model.state_dict())"),
    CorpusEntry("benign", "legacy_state_dict.pt", lambda p: p.legacy_torch(),
                "torch.save(..., _use_new_zipfile_serialization=False)"),
    CorpusEntry("benign", "torchscript.pt", lambda p: p.torchscript_archive(),
                "torch.jit.save of a scripted model"),
    CorpusEntry("benign", "full_module_builtin_layers.pt", lambda p: p.torch_full_module_builtin_layers(),
                "torch.save of a whole nn.Sequential of built-in layers"),
    CorpusEntry("benign", "optimizer_state.pt", lambda p: p.torch_optimizer_state(),
                "torch.save(Adam.state_dict()) after one step"),
    CorpusEntry("benign", "torch_misc_objects.pt", lambda p: p.torch_misc_objects(),
                "torch.save of int8/bfloat16 tensors, a device, a dtype, a Size and a Parameter"),
    CorpusEntry("benign", "sklearn_logistic.pkl", lambda p: p.sklearn_pickle("logistic", 4),
                "pickle of a fitted LogisticRegression"),
    CorpusEntry("benign", "sklearn_forest.pkl", lambda p: p.sklearn_pickle("forest", 5),
                "pickle (protocol 5) of a fitted RandomForestClassifier"),
    CorpusEntry("benign", "sklearn_pipeline.joblib", lambda p: p.sklearn_joblib("pipeline"),
                "joblib.dump of a StandardScaler + LogisticRegression Pipeline"),
    CorpusEntry("benign", "sklearn_forest_zlib.joblib", lambda p: p.sklearn_joblib("forest", 3),
                "joblib.dump(compress=3) of a RandomForestClassifier"),
    CorpusEntry("benign", "weights.npy", _npy, "np.save of a float32 array"),
    CorpusEntry("benign", "arrays.npz", _npz, "np.savez_compressed of two numeric arrays"),
    CorpusEntry("benign", "plain_data_p0.pkl", lambda p: p.plain_data_pickles()["protocol0"],
                "pickle protocol 0 of plain dicts, lists, tuples, bytes"),
    CorpusEntry("benign", "plain_data_p2.pkl", lambda p: p.plain_data_pickles()["protocol2"],
                "the same data, protocol 2"),
    CorpusEntry("benign", "plain_data_p5.pkl", lambda p: p.plain_data_pickles()["protocol5"],
                "the same data, protocol 5"),
)  # fmt: skip

CORPUS_MANIFESTS: dict[str, tuple[CorpusEntry, ...]] = {
    "formats": FORMAT_SAMPLES,
    "pickle_family": PICKLE_SAMPLES,
}


def load_module(path: Path) -> ModuleType:
    """Import a corpus module as the tests do (`tests.corpus.<name>`, from the repository root)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    relative = path.relative_to(REPO).with_suffix("")
    return importlib.import_module(".".join(relative.parts))


def generators(module: ModuleType, prefix: str) -> list[tuple[str, Callable[..., Any]]]:
    """The module's own functions named `<prefix>_*`, in source order (the corpus API by convention)."""
    found = []
    for name, value in vars(module).items():
        own = inspect.isfunction(value) and value.__module__ == module.__name__
        if name.startswith(prefix + "_") and own:
            found.append((name, value))
    return sorted(found, key=lambda item: item[1].__code__.co_firstlineno)


def call_generator(name: str, function: Callable[..., Any], workdir: Path) -> list[GeneratedFile]:
    """Call one generator and turn what it returns into files.

    Accepted shapes: bytes; (filename, bytes); an object with `.name`/`.data` (or `.filename`/
    `.content`); a list of those; or, for a generator that takes a directory, the files it wrote.
    """
    doc = (inspect.getdoc(function) or "").strip().splitlines()
    description = doc[0] if doc else ""
    params = [
        p
        for p in inspect.signature(function).parameters.values()
        if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    stem = name.split("_", 1)[1]
    if params:
        out = workdir / stem
        out.mkdir(parents=True, exist_ok=True)
        result = function(out)
        if isinstance(result, (str, Path)) and Path(result).is_file():
            path = Path(result)
            return [GeneratedFile(path.name, path.read_bytes(), description)]
        files = sorted(p for p in out.rglob("*") if p.is_file())
        return [GeneratedFile(f"{stem}__{p.name}", p.read_bytes(), description) for p in files]
    return list(_coerce(function(), stem, description))


def _coerce(value: Any, stem: str, description: str) -> Iterator[GeneratedFile]:
    if isinstance(value, (bytes, bytearray, memoryview)):
        yield GeneratedFile(stem, bytes(value), description)
    elif isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], (bytes, bytearray)):
        yield GeneratedFile(str(value[0]), bytes(value[1]), description)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _coerce(item, stem, description)
    else:
        name = getattr(value, "name", None) or getattr(value, "filename", None)
        data = getattr(value, "data", None)
        if data is None:
            data = getattr(value, "content", None)
        if name is None or not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"generator {stem}: cannot turn {type(value).__name__} into a file")
        text = getattr(value, "description", None) or description
        yield GeneratedFile(str(name), bytes(data), str(text))


def build_entry(entry: CorpusEntry, module: ModuleType) -> GeneratedFile:
    built = entry.build(module)
    if isinstance(built, dict):
        (_, data), *rest = built.items()
        folder = str(Path(entry.name).parent)
        return GeneratedFile(
            entry.name, data, entry.description, tuple((str(Path(folder) / n), d) for n, d in rest)
        )
    return GeneratedFile(entry.name, bytes(built), entry.description)


def build_corpus(dest: Path, modules: Sequence[Path] = CORPUS_MODULES) -> tuple[list[Sample], list[str]]:
    """Write every sample to dest/{malicious,benign}/; returns the samples and any problems met.

    A module with an entry in CORPUS_MANIFESTS is built from that table; any other module is read by
    convention (its malicious_* and benign_* functions). A builder that fails is reported, not fatal.
    """
    samples: list[Sample] = []
    problems: list[str] = []
    if dest.exists():
        shutil.rmtree(dest)
    for kind in ("malicious", "benign"):
        (dest / kind).mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="corpus-") as scratch:
        for module_path in modules:
            label = module_path.relative_to(REPO).as_posix()
            if not module_path.is_file():
                problems.append(f"{label} does not exist")
                continue
            try:
                module = load_module(module_path)
            except Exception as exc:
                problems.append(f"{label}: import failed: {exc!r}")
                continue
            built: list[tuple[str, GeneratedFile]] = []
            manifest = CORPUS_MANIFESTS.get(module_path.stem)
            if manifest is not None:
                for entry in manifest:
                    try:
                        built.append((entry.kind, build_entry(entry, module)))
                    except Exception as exc:
                        problems.append(f"{label}: {entry.name}: {type(exc).__name__}: {exc}")
            else:
                for kind in ("malicious", "benign"):
                    found = generators(module, kind)
                    if not found:
                        problems.append(f"{label}: no {kind}_* generators found")
                    for name, function in found:
                        try:
                            files = call_generator(name, function, Path(scratch) / module_path.stem / kind)
                        except Exception as exc:
                            problems.append(f"{label}: {name}: {type(exc).__name__}: {exc}")
                            continue
                        built += [(kind, generated) for generated in files]
            samples += [
                dataclasses.replace(_write_sample(dest / kind, kind, generated), group=module_path.stem)
                for kind, generated in built
            ]
    return samples, problems


def _write_sample(folder: Path, kind: str, generated: GeneratedFile) -> Sample:
    parts = [
        re.sub(r"[^A-Za-z0-9._-]", "_", p) for p in Path(generated.name).parts if p not in ("", ".", "..")
    ]
    name = "/".join(parts[-2:]) or "sample"
    path = folder / name
    n = 2
    while path.exists():
        path = folder / f"{Path(name).stem}-{n}{Path(name).suffix}"
        n += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(generated.data)
    for companion, data in generated.companions:
        (folder / companion).parent.mkdir(parents=True, exist_ok=True)
        (folder / companion).write_bytes(data)
    return Sample(path.relative_to(folder).as_posix(), path, kind, generated.description, len(generated.data))


# -- large files -----------------------------------------------------------------------------------
FRAME_TARGET = 64 * KiB  # CPython's pickle frame size target (protocol 4+)
BATCH = 1000  # CPython's APPENDS batch size


class _FramedWriter:
    """Protocol-4 framing as CPython's pickler does it: a frame is closed at an object boundary once it
    holds at least 64 KiB. Lets the dense pickle below be written in pieces yet byte-identical."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.frame = bytearray()
        self.written = 0

    def boundary(self) -> None:
        if len(self.frame) >= FRAME_TARGET:
            self.commit()

    def commit(self) -> None:
        if len(self.frame) >= 4:  # tiny trailing frames are written unframed, as CPython does
            header = b"\x95" + struct.pack("<Q", len(self.frame))
            self.out.write(header)
            self.written += len(header)
        self.out.write(self.frame)
        self.written += len(self.frame)
        self.frame = bytearray()


def _save_int(frame: bytearray, value: int) -> None:
    if 0 <= value < 256:
        frame += b"K" + bytes((value,))  # BININT1
    elif 0 <= value < 65536:
        frame += b"M" + struct.pack("<H", value)  # BININT2
    else:
        frame += b"J" + struct.pack("<i", value)  # BININT


def dense_item(i: int) -> tuple[int, str]:
    return (i, f"w{i}")


def write_dense_pickle(out: BinaryIO, count: int | None = None, *, min_bytes: int = 0) -> int:
    """Write exactly pickle.dumps([dense_item(i) for i in range(n)], protocol=4), streaming.

    n is `count`, or (with min_bytes) the first multiple of 1000 whose pickle reaches min_bytes. Every
    element costs five opcodes (an int, a short string, MEMOIZE, TUPLE2, MEMOIZE), so the file is as
    opcode-dense as real pickles get, with a memo that grows by two entries per element. A unit test
    checks the bytes against pickle.dumps. Returns the number of bytes written.
    """
    if count is None and min_bytes <= 0:
        raise ValueError("give count or min_bytes")
    out.write(b"\x80\x04")  # PROTO 4 (outside any frame)
    writer = _FramedWriter(out)
    writer.frame += b"]\x94"  # EMPTY_LIST, MEMOIZE
    start = 0
    while count is None or start < count:
        end = start + BATCH if count is None else min(count, start + BATCH)
        batched = count is None or count > 1  # CPython writes a lone element with APPEND, no MARK
        if batched:
            writer.frame += b"("  # MARK
        for i in range(start, end):
            writer.boundary()  # save(tuple)
            writer.boundary()  # save(int)
            _save_int(writer.frame, i)
            writer.boundary()  # save(str)
            text = f"w{i}".encode()
            writer.frame += b"\x8c" + bytes((len(text),)) + text + b"\x94"  # SHORT_BINUNICODE, MEMOIZE
            writer.frame += b"\x86\x94"  # TUPLE2, MEMOIZE
        writer.frame += b"e" if batched else b"a"  # APPENDS / APPEND
        start = end
        if count is None and 2 + writer.written + len(writer.frame) + 10 >= min_bytes:
            break
    writer.frame += b"."  # STOP
    writer.commit()
    return writer.written + 2


SAFETENSORS_TENSORS = 8


def write_sparse_safetensors(path: Path, total_bytes: int) -> None:
    """A valid safetensors file of exactly total_bytes: a real header, a zero-filled (sparse) body.

    The header names SAFETENSORS_TENSORS F32 tensors that tile the data region exactly (sorted,
    non-overlapping offsets), padded with spaces to 8 bytes as the reference writer does.
    """
    header_reserve = 1024
    data_bytes = (total_bytes - 8 - header_reserve) // 4 * 4
    per_tensor = data_bytes // SAFETENSORS_TENSORS // 4 * 4
    tensors: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for index in range(SAFETENSORS_TENSORS):
        size = per_tensor if index < SAFETENSORS_TENSORS - 1 else data_bytes - offset
        tensors[f"layers.{index}.weight"] = {
            "dtype": "F32",
            "shape": [size // 4],
            "data_offsets": [offset, offset + size],
        }
        offset += size
    header = json.dumps(tensors, separators=(",", ":")).encode()
    header_len = total_bytes - 8 - data_bytes
    if len(header) > header_len:
        raise ValueError("safetensors header does not fit its reserve")
    header += b" " * (header_len - len(header))
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        f.truncate(total_bytes)


def write_torch_checkpoint(path: Path, data_bytes: int) -> None:
    """torch.save of a state dict of four float32 tensors holding data_bytes in all (random values)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    per_tensor = max(1, data_bytes // 4 // 4)
    state = {}
    for index in range(4):
        state[f"blocks.{index}.weight"] = torch.randn(per_tensor, generator=generator)
    torch.save(state, path)
    del state


@dataclass(frozen=True)
class LargeSpec:
    key: str
    filename: str
    label: str
    build: Callable[[Path, int], None]


def _build_dense(path: Path, target: int) -> None:
    with path.open("wb") as f:
        write_dense_pickle(f, min_bytes=target)


LARGE_SPECS = (
    LargeSpec("torch", "checkpoint.pt", "PyTorch checkpoint (torch.save, zip)", write_torch_checkpoint),
    LargeSpec("pickle", "dense.pkl", "opcode-dense pickle (protocol 4)", _build_dense),
    LargeSpec("safetensors", "model.safetensors", "safetensors (sparse body)", write_sparse_safetensors),
)


def ensure_large(dest: Path, sizes: dict[str, int]) -> list[Sample]:
    """Build each large file unless the same spec already sits there with its recorded size."""
    dest.mkdir(parents=True, exist_ok=True)
    samples = []
    for spec in LARGE_SPECS:
        if spec.key not in sizes:
            continue
        target = sizes[spec.key]
        path = dest / f"{_size_label(target).replace(' ', '')}-{spec.filename}"
        manifest = path.with_name(path.name + ".json")
        recorded = _read_json(manifest)
        if not (
            path.is_file()
            and recorded.get("target") == target
            and recorded.get("size") == path.stat().st_size
        ):
            print(f"  building {path.name} ...", flush=True)
            started = time.monotonic()
            spec.build(path, target)
            manifest.write_text(json.dumps({"target": target, "size": path.stat().st_size}))
            print(f"  built {path.name}: {path.stat().st_size:,} bytes in {time.monotonic() - started:.1f} s")
        samples.append(Sample(path.name, path, "large", spec.label, path.stat().st_size))
    return samples


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


# -- running ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    tool: str
    sample: str
    kind: str
    outcome: Outcome
    detail: str = ""
    wall_seconds: float = 0.0
    max_rss_kib: int = 0
    returncode: int | None = None


def scan_one(adapter: Adapter, status: ToolStatus, sample: Sample, timeout: float) -> Row:
    if not status.ready:
        return Row(adapter.name, sample.name, sample.kind, Outcome.NOT_RUN, status.reason)
    with tempfile.TemporaryDirectory(prefix=f"{adapter.name}-") as scratch_dir:
        scratch = Path(scratch_dir)
        argv = adapter.build_command(status.venv, sample.path.resolve(), scratch)
        env = {**os.environ, **adapter.environment, "PYTHONDONTWRITEBYTECODE": "1"}
        env.pop("PYTHONPATH", None)
        env["VIRTUAL_ENV"] = str(status.venv)
        env["PATH"] = f"{status.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        try:
            measured = run_measured(argv, cwd=scratch, env=env, timeout=timeout)
        except (OSError, RuntimeError) as exc:
            return Row(adapter.name, sample.name, sample.kind, Outcome.ERROR, f"harness: {exc}")
        if measured.timed_out:
            verdict = Classification(Outcome.TIMEOUT, f"killed after {timeout:.0f} s")
        else:
            output = ToolOutput(measured.returncode, measured.stdout, measured.stderr, scratch)
            try:
                verdict = adapter.classify(output)
            except Exception as exc:  # an adapter bug must not lose the whole run
                verdict = Classification(Outcome.ERROR, f"adapter could not read the output: {exc!r}")
    return Row(
        adapter.name,
        sample.name,
        sample.kind,
        verdict.outcome,
        verdict.detail,
        measured.wall_seconds,
        measured.max_rss_kib,
        None if measured.timed_out else measured.returncode,
    )


def run_matrix(
    pairs: Iterable[tuple[Adapter, ToolStatus, Sample]], *, timeout: float, jobs: int, progress: str
) -> list[Row]:
    work = list(pairs)
    done: list[Row] = []
    started = time.monotonic()

    def one(item: tuple[Adapter, ToolStatus, Sample]) -> Row:
        row = scan_one(*item, timeout=timeout)
        done.append(row)
        if len(done) % 25 == 0 or len(done) == len(work):
            print(
                f"  {progress}: {len(done)}/{len(work)} runs, {time.monotonic() - started:.0f} s", flush=True
            )
        return row

    if jobs <= 1:
        return [one(item) for item in work]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, work))


# -- aggregation -----------------------------------------------------------------------------------
@dataclass
class CorpusSummary:
    tool: str
    malicious: int = 0
    benign: int = 0
    detected: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)  # malicious, reported clean
    malicious_other: list[str] = field(default_factory=list)  # malicious: error/unsupported/timeout
    false_alarms: list[str] = field(default_factory=list)  # benign, flagged
    benign_other: list[str] = field(default_factory=list)  # benign: error/unsupported/timeout
    not_run: bool = False


def summarize_corpus(rows: Iterable[Row], tools: Sequence[str]) -> list[CorpusSummary]:
    summaries = {tool: CorpusSummary(tool) for tool in tools}
    for row in rows:
        if row.kind not in ("malicious", "benign") or row.tool not in summaries:
            continue
        s = summaries[row.tool]
        if row.outcome is Outcome.NOT_RUN:
            s.not_run = True
        label = (
            row.sample if row.outcome in (Outcome.FLAGGED, Outcome.CLEAN) else f"{row.sample} ({row.outcome})"
        )
        if row.kind == "malicious":
            s.malicious += 1
            if row.outcome is Outcome.FLAGGED:
                s.detected.append(row.sample)
            elif row.outcome is Outcome.CLEAN:
                s.missed.append(row.sample)
            else:
                s.malicious_other.append(label)
        else:
            s.benign += 1
            if row.outcome is Outcome.FLAGGED:
                s.false_alarms.append(row.sample)
            elif row.outcome is not Outcome.CLEAN:
                s.benign_other.append(label)
    return [summaries[tool] for tool in tools]


# -- the report ------------------------------------------------------------------------------------
SYMBOL = {
    Outcome.FLAGGED: "flagged",
    Outcome.CLEAN: "clean",
    Outcome.UNSUPPORTED: "unsupported",
    Outcome.ERROR: "error",
    Outcome.TIMEOUT: "timeout",
    Outcome.NOT_RUN: "not run",
}


@dataclass
class RunInfo:
    command: str
    started: str
    machine: dict[str, str]
    tools: list[ToolStatus]
    adapters: Sequence[Adapter]
    samples: list[Sample]
    rows: list[Row]
    problems: list[str]
    timeouts: dict[str, float]
    duration_seconds: float = 0.0


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _names(items: Sequence[str]) -> str:
    return ", ".join(f"`{_cell(i)}`" for i in items) if items else "-"


def _size_label(n: int) -> str:
    if n >= GiB and n % GiB == 0:
        return f"{n // GiB} GiB"
    if n >= GiB:
        return f"{n / GiB:.2f} GiB"
    if n >= MiB and n % MiB == 0:
        return f"{n // MiB} MiB"
    if n >= MB:
        return f"{n / MB:.0f} MB"
    return f"{n / KiB:.0f} KiB"


GROUP_NOTES = {
    "pickle_family": " (pickle, PyTorch, joblib, NumPy: the formats every tool here claims to cover)",
    "formats": " (Keras, ONNX, GGUF, safetensors, archives, SavedModel: outside picklescan's and "
    "fickling's scope)",
}


def _summary_table(rows: Iterable[Row], tools: Sequence[str]) -> list[str]:
    lines = [
        "| Tool | Detected | Missed | Malicious: error / unsupported | False alarms "
        "| Benign: error / unsupported |",
        "|---|---|---|---|---|---|",
    ]
    for s in summarize_corpus(rows, tools):
        if s.not_run:
            lines.append(f"| {s.tool} | not run | | | | |")
            continue
        lines.append(
            f"| {s.tool} | {len(s.detected)}/{s.malicious} | {len(s.missed)} | {len(s.malicious_other)} "
            f"| {len(s.false_alarms)}/{s.benign} | {len(s.benign_other)} |"
        )
    return lines


def render_markdown(info: RunInfo) -> str:
    """The generated part of docs/scanner-comparison.md: only what this run measured."""
    tools = [t.name for t in info.tools]
    corpus = [s for s in info.samples if s.kind != "large"]
    large = [s for s in info.samples if s.kind == "large"]
    by_key = {(r.tool, r.sample, r.kind): r for r in info.rows}
    lines = [
        BEGIN,
        f"Run: {info.started} (took {info.duration_seconds / 60:.1f} min). "
        "Command, from the repository root:",
        "",
        "```",
        info.command,
        "```",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.machine.items()) + ".",
        "",
        "| Tool | Version | How it was run and what counts as flagged |",
        "|---|---|---|",
    ]
    adapters = {a.name: a for a in info.adapters}
    for status in info.tools:
        version = status.version if status.ready else f"not run: {status.reason}"
        lines.append(f"| {status.name} | {_cell(version)} | {_cell(adapters[status.name].notes)} |")
    lines += ["", "Pinned installs (each in its own virtualenv under `benchmarks/.venvs/`):", ""]
    for status in info.tools:
        if status.packages:
            lines.append(f"- {status.name}: `pip install {' '.join(status.packages)}`")
    lines.append("- modelshield: the project's `.venv` (`make install-dev`)")
    lines.append("")

    if corpus:
        malicious = sum(1 for s in corpus if s.kind == "malicious")
        benign = len(corpus) - malicious
        lines += [
            f"### Corpus: {malicious} malicious, {benign} benign samples",
            "",
            f"Per-file timeout {info.timeouts['corpus']:.0f} s. *Detected*: flagged malicious samples. "
            "*Missed*: "
            "malicious samples the tool reported clean (its exit code would pass a CI gate). *Errors* are "
            "neither: the tool failed, timed out or declined the file (a non-zero exit a CI gate may or may "
            "not treat as a failure). *False alarms*: benign samples flagged.",
            "",
        ]
        lines += _summary_table(info.rows, tools)
        groups = sorted({s.group for s in corpus if s.group})
        for group in groups if len(groups) > 1 else []:
            members = {(s.name, s.kind) for s in corpus if s.group == group}
            subset = [r for r in info.rows if (r.sample, r.kind) in members]
            n_mal = sum(1 for s in corpus if s.group == group and s.kind == "malicious")
            lines += [
                "",
                f"Only the samples from `tests/corpus/{group}.py` ({n_mal} malicious, "
                f"{len(members) - n_mal} benign){GROUP_NOTES.get(group, '')}:",
                "",
                *_summary_table(subset, tools),
            ]
        lines += ["", "Which samples, per tool:", ""]
        for s in summarize_corpus(info.rows, tools):
            if s.not_run:
                continue
            lines.append(f"- **{s.tool}** missed: {_names(s.missed)}")
            lines.append(f"  - malicious, error/unsupported: {_names(s.malicious_other)}")
            lines.append(f"  - false alarms: {_names(s.false_alarms)}")
            lines.append(f"  - benign, error/unsupported: {_names(s.benign_other)}")
        lines += ["", "#### Every sample, every tool", ""]
        lines.append("| Sample | Kind | What it is | " + " | ".join(tools) + " |")
        lines.append("|---|---|---|" + "---|" * len(tools))
        for sample in corpus:
            cells = []
            for tool in tools:
                row = by_key.get((tool, sample.name, sample.kind))
                cells.append(SYMBOL[row.outcome] if row else "")
            description = _cell(sample.description)[:120]
            lines.append(
                f"| `{_cell(sample.name)}` | {sample.kind} | {description} | " + " | ".join(cells) + " |"
            )
        lines += [
            "",
            "<details><summary>What each tool said (first line of its finding or error)</summary>",
            "",
        ]
        lines.append("| Sample | Tool | Outcome | Detail |")
        lines.append("|---|---|---|---|")
        for sample in corpus:
            for tool in tools:
                row = by_key.get((tool, sample.name, sample.kind))
                if row and row.detail:
                    lines.append(f"| `{_cell(sample.name)}` | {tool} | {row.outcome} | {_cell(row.detail)} |")
        lines += ["", "</details>", ""]

    if large:
        lines += [
            "### Large files: wall time and peak memory",
            "",
            f"One tool at a time, one process per file, per-file timeout {info.timeouts['large']:.0f} s. "
            "Wall "
            "time includes interpreter start-up; peak RSS is the process's maximum resident set (os.wait4).",
            "",
            "| File | Size | Tool | Verdict | Wall time | Peak RSS | Detail |",
            "|---|---|---|---|---|---|---|",
        ]
        for sample in large:
            for tool in tools:
                row = by_key.get((tool, sample.name, "large"))
                if row is None:
                    continue
                if row.outcome is Outcome.NOT_RUN:
                    lines.append(
                        f"| {sample.description} | {_size_label(sample.size)} | {tool} | not run | | | |"
                    )
                    continue
                wall = (
                    f">{row.wall_seconds:.0f} s"
                    if row.outcome is Outcome.TIMEOUT
                    else f"{row.wall_seconds:.1f} s"
                )
                lines.append(
                    f"| {sample.description} | {_size_label(sample.size)} ({sample.size:,} B) | {tool} "
                    f"| {SYMBOL[row.outcome]} | {wall} | {row.max_rss_kib / KiB:,.0f} MiB "
                    f"| {_cell(row.detail)[:140]} |"
                )
        lines.append("")
    if info.problems:
        lines += ["### Problems while building the corpus", ""]
        lines += [f"- {_cell(p)}" for p in info.problems]
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


DOC_HEADER = """# ModelShield compared with picklescan, modelscan, fickling and ModelAudit

How to read this: the section between the GENERATED markers is rewritten by every run of
`benchmarks/compare_scanners.py` and holds only numbers that run measured. Everything outside the
markers is commentary and is kept as it is.

"""


def write_doc(path: Path, generated: str) -> None:
    """Replace the generated block, keeping any hand-written text around it."""
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if BEGIN in text and END in text:
            before, rest = text.split(BEGIN, 1)
            after = rest.split(END, 1)[1]
            path.write_text(before + generated + after, encoding="utf-8")
            return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DOC_HEADER + generated + "\n", encoding="utf-8")


def machine_info() -> dict[str, str]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        memory = f"{kib / KiB / KiB:.0f} GiB"
    info = {
        "nproc": str(os.cpu_count() or "?"),
        "CPU": cpu or platform.processor() or "?",
        "RAM": memory or "?",
        "OS": f"{platform.system()} {platform.release()}",
        "Python (tools)": _python_version(sys.executable),
        "load average at start": " / ".join(f"{x:.1f}" for x in os.getloadavg()),
    }
    return info


def _python_version(python: str) -> str:
    probe = subprocess.run([python, "--version"], capture_output=True, text=True)
    return (probe.stdout or probe.stderr).strip().removeprefix("Python ")


# -- raw results (so the report can be re-rendered without re-running) ---------------------------------
def save_results(path: Path, info: RunInfo) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "command": info.command,
        "started": info.started,
        "duration_seconds": info.duration_seconds,
        "timeouts": info.timeouts,
        "machine": info.machine,
        "tools": [{**asdict(t), "venv": str(t.venv)} for t in info.tools],
        "samples": [{**asdict(s), "path": str(s.path)} for s in info.samples],
        "rows": [asdict(r) for r in info.rows],
        "problems": info.problems,
    }
    path.write_text(json.dumps(data, indent=1))


def _group_of(sample: dict[str, Any]) -> str:
    """For results saved before samples carried their module: look the name up in the manifests."""
    for group, entries in CORPUS_MANIFESTS.items():
        if sample.get("kind") != "large" and any(entry.name == sample.get("name") for entry in entries):
            return group
    return ""


def load_results(path: Path) -> RunInfo:
    data = json.loads(path.read_text())
    tools = [
        ToolStatus(**{**t, "venv": Path(t["venv"]), "packages": tuple(t.get("packages", ()))})
        for t in data["tools"]
    ]
    names = {t.name for t in tools}
    return RunInfo(
        command=data.get("command", "KERAS_BACKEND=torch .venv/bin/python benchmarks/compare_scanners.py"),
        started=data["started"],
        machine=data["machine"],
        tools=tools,
        adapters=[a for a in ADAPTERS if a.name in names],
        samples=[
            Sample(**{**s, "path": Path(s["path"]), "group": s.get("group") or _group_of(s)})
            for s in data["samples"]
        ],
        rows=[Row(**{**r, "outcome": Outcome(r["outcome"])}) for r in data["rows"]],
        problems=data.get("problems", []),
        timeouts=data.get("timeouts", {"corpus": 60.0, "large": 240.0}),
        duration_seconds=data.get("duration_seconds", 0.0),
    )


# -- command line ----------------------------------------------------------------------------------
def parse_sizes(text: str) -> dict[str, int]:
    """`torch=1GiB,pickle=200MB,safetensors=2GiB` -> bytes per large file (a subset is fine)."""
    units = {"": 1, "B": 1, "KB": 1000, "MB": MB, "GB": 1000 * MB, "KIB": KiB, "MIB": MiB, "GIB": GiB}
    sizes: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)
        if key not in FULL_SIZES or not match or match.group(2).upper() not in units:
            raise argparse.ArgumentTypeError(
                f"bad size {part!r}; e.g. torch=1GiB,pickle=200MB,safetensors=2GiB"
            )
        sizes[key] = int(float(match.group(1)) * units[match.group(2).upper()])
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small large files (64 MiB / 20 MB / 256 MiB)")
    parser.add_argument("--sizes", type=parse_sizes, help="large-file sizes, e.g. torch=1GiB,pickle=200MB")
    parser.add_argument("--tools", default=",".join(a.name for a in ADAPTERS), help="comma-separated subset")
    parser.add_argument("--skip-corpus", action="store_true")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel corpus runs")
    parser.add_argument("--timeout", type=float, default=60.0, help="per corpus file, seconds")
    parser.add_argument(
        "--timeout-large", type=float, default=None, help="per large file (default 240, quick 60)"
    )
    parser.add_argument("--no-install", action="store_true", help="do not create or update tool venvs")
    parser.add_argument("--python", default="python3", help="interpreter for the tool venvs")
    parser.add_argument("--doc", type=Path, default=DOC, help="markdown file to update")
    parser.add_argument("--no-doc", action="store_true", help="print the tables only")
    parser.add_argument(
        "--from-results",
        type=Path,
        metavar="JSON",
        help="re-render the report from a saved results.json (benchmarks/.data/compare/) without running",
    )
    args = parser.parse_args(argv)
    if args.from_results:
        generated = render_markdown(load_results(args.from_results))
        print(generated)
        if not args.no_doc:
            write_doc(args.doc, generated)
        return 0

    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = machine_info()  # before we add load of our own
    wanted = [t.strip() for t in args.tools.split(",") if t.strip()]
    adapters = [a for a in ADAPTERS if a.name in wanted]
    unknown = set(wanted) - {a.name for a in ADAPTERS}
    if unknown:
        parser.error(f"unknown tools: {', '.join(sorted(unknown))}")
    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES)
    timeout_large = args.timeout_large or (60.0 if args.quick else 240.0)

    print("tools:", flush=True)
    statuses = []
    for adapter in adapters:
        status = ensure_tool(adapter, install=not args.no_install, python=args.python)
        statuses.append(status)
        print(
            f"  {adapter.name}: {status.version if status.ready else 'not run: ' + status.reason}", flush=True
        )

    samples: list[Sample] = []
    problems: list[str] = []
    rows: list[Row] = []
    pairs = list(zip(adapters, statuses, strict=True))
    if not args.skip_corpus:
        print("corpus:", flush=True)
        corpus, problems = build_corpus(DATA / "corpus")
        for problem in problems:
            print(f"  problem: {problem}", flush=True)
        print(
            f"  {sum(s.kind == 'malicious' for s in corpus)} malicious, "
            f"{sum(s.kind == 'benign' for s in corpus)} benign"
        )
        samples += corpus
        work = [(a, st, s) for s in corpus for a, st in pairs]
        rows += run_matrix(work, timeout=args.timeout, jobs=args.jobs, progress="corpus")
    if not args.skip_large:
        print("large files:", flush=True)
        large = ensure_large(DATA / "large", sizes)
        samples += large
        for sample in large:
            for adapter, status in pairs:
                row = scan_one(adapter, status, sample, timeout_large)
                rows.append(row)
                print(
                    f"  {sample.name:<28} {adapter.name:<12} {row.outcome!s:<11} {row.wall_seconds:7.1f} s "
                    f"{row.max_rss_kib / KiB:8.0f} MiB  {row.detail[:70]}",
                    flush=True,
                )

    command = "KERAS_BACKEND=torch .venv/bin/python benchmarks/compare_scanners.py"
    if argv is None:
        extra = sys.argv[1:]
        command += (" " + " ".join(extra)) if extra else ""
    info = RunInfo(
        command=command,
        started=stamp,
        machine={**machine, "load average at end": " / ".join(f"{x:.1f}" for x in os.getloadavg())},
        tools=statuses,
        adapters=adapters,
        samples=samples,
        rows=rows,
        problems=problems,
        timeouts={"corpus": args.timeout, "large": timeout_large},
        duration_seconds=time.monotonic() - started,
    )
    generated = render_markdown(info)
    print()
    print(generated)
    results = DATA / "compare" / "results.json"
    save_results(results, info)
    if not args.no_doc:
        write_doc(args.doc, generated)
        print(f"\nwrote {args.doc} and {results}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("KERAS_BACKEND", "torch")
    sys.exit(main())
