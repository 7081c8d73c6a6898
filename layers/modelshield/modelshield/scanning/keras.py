"""Keras scanner: `.keras` zips (config.json) and legacy `.h5` files (the root `model_config` attribute).

How Keras runs code from a model file:
- `Lambda` layers carry Python bytecode (marshalled, base64) or a reference to a function by module and
  name; loading runs it (Keras 3 refuses only in safe_mode, which users turn off to load such models);
- any serialized object names a `module` and `class_name`/`registered_name` that Keras imports; modules
  outside Keras (`os`, `builtins`, `subprocess` ...) escape safe_mode (CVE-2025-1550), and some Keras
  functions themselves write files (`keras.utils.get_file`, CVE-2025-8747);
- layers that wrap other serialized code: `TorchModuleWrapper` (a pickled torch module), `TFSMLayer`
  (loads a SavedModel from a path), TF-op lambdas calling arbitrary `tf.*` functions.
We walk the whole config tree (nested Functional/Sequential models, TimeDistributed/Bidirectional wrappers,
initializers, losses, optimizers...) and judge every object: -> MS-CODE-EXEC for code, MS-CODE-UNKNOWN for
objects outside the Keras namespaces (custom classes need `custom_objects`: user code will run).

Legacy `.h5` files are read by the minimal HDF5 reader in `hdf5.py` (root attributes only, where Keras
keeps `model_config` and `training_config`); what it cannot read is reported as MS-SCAN-INCOMPLETE.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from modelshield.models import Format, RuleId, Severity
from modelshield.scanning.hdf5 import HDF5Error, HDF5Reader, sniff_hdf5, walk_tree
from modelshield.scanning.registry import ScanContext, register
from modelshield.scanning.zips import (
    ZipEntry,
    central_names,
    open_zip_member,
    scan_zip_archive,
    sniff_zip,
)

CONFIG_MEMBER = "config.json"
METADATA_MEMBER = "metadata.json"
WEIGHTS_MEMBER = "model.weights.h5"
MAX_CONFIG_NODES = 2_000_000  # JSON values visited in one config
MAX_CONFIG_DEPTH = 200

# Module roots whose classes and functions Keras itself (or its official model libraries) provides.
KERAS_MODULE_ROOTS = frozenset({"keras", "tf_keras", "keras_hub", "keras_nlp", "keras_cv", "keras_rs"})
KERAS_MODULE_PREFIXES = ("tensorflow.keras", "tensorflow.python.keras")
# Module roots that reach the OS, the interpreter or the network: always code execution, whatever the
# name under them. Each entry says what a config naming it could do (as pickle_globals.py does).
DANGEROUS_MODULE_ROOTS: dict[str, str] = {
    "os": "operating-system calls: runs commands, writes and deletes files",
    "posix": "operating-system calls (os on Unix): runs commands, writes files",
    "nt": "operating-system calls (os on Windows): runs commands, writes files",
    "sys": "the interpreter itself: modules, import hooks, exit",
    "subprocess": "spawns processes",
    "builtins": "eval, exec, open, __import__",
    "__builtin__": "eval, exec, open, __import__ (Python 2 name)",
    "__main__": "whatever the loading script defines, unknown here",
    "importlib": "imports any module",
    "runpy": "runs modules and scripts",
    "pty": "spawns a shell on a terminal",
    "code": "compiles and runs Python source",
    "codeop": "compiles Python source",
    "pdb": "the debugger: runs arbitrary statements",
    "bdb": "the debugger base: runs arbitrary statements",
    "timeit": "runs a statement given as a string",
    "pickle": "unpickles bytes: runs whatever they name",
    "_pickle": "unpickles bytes: runs whatever they name",
    "cPickle": "unpickles bytes: runs whatever they name (Python 2 name)",
    "dill": "unpickles bytes, including code objects",
    "marshal": "loads code objects",
    "shutil": "copies, moves and deletes files and trees",
    "socket": "opens network connections",
    "ctypes": "calls native code and raw memory",
    "multiprocessing": "spawns processes running any callable",
    "asyncio": "spawns subprocesses and opens connections",
    "webbrowser": "starts a browser program on a URL",
    "urllib": "fetches URLs",
    "requests": "fetches URLs",
    "http": "HTTP clients and servers",
    "ftplib": "FTP uploads and downloads",
    "smtplib": "sends mail over SMTP",
    "tempfile": "creates files and directories",
    "pathlib": "reads, writes and deletes files",
    "io": "opens files by path",
    "glob": "lists the file system",
    "operator": "attrgetter/methodcaller reach any attribute or method",
    "functools": "partial/reduce wrap and call any callable",
    "types": "builds functions and code objects",
    "signal": "installs signal handlers (callbacks that run later)",
    "threading": "starts threads running any callable",
}
# Keras names that touch files or turn safety off (matched on class_name, function name or module leaf).
KERAS_DANGEROUS_NAMES: dict[str, str] = {
    "get_file": "downloads a URL and writes the file to disk (CVE-2025-8747)",
    "enable_unsafe_deserialization": "turns safe_mode off for everything loaded after it",
    "load_model": "loads another model (and its code) from a path",
    "load_weights": "reads a weights file from a path",
    "save_model": "writes a model file to a path",
    "save_weights": "writes a weights file to a path",
    "file_utils": "Keras file helpers: read, write and download paths",
    "io_utils": "Keras I/O helpers: read and write paths",
    "TorchModuleWrapper": "wraps a pickled torch module: loading unpickles it",
}
# Serialization markers Keras 3 uses for plain values (not code).
KERAS_VALUE_MARKERS = frozenset(
    {"__numpy__", "__tensor__", "__bytes__", "__typespec__", "__ellipsis__", "__slice__", "__keras_tensor__"}
)
# Class names Keras resolves itself in legacy (module-less) configs: layers, models, initializers,
# regularizers, constraints, losses, metrics, optimizers, schedules and dtype policies (Keras 2 and 3).
KNOWN_KERAS_CLASSES = frozenset(
    """
    AUC AWQConfig AWQDTypePolicy AbsMaxQuantizer Accuracy Activation ActivityRegularization Adadelta
    Adafactor Adagrad Adam AdamW Adamax AdaptiveAveragePooling1D AdaptiveAveragePooling2D
    AdaptiveAveragePooling3D AdaptiveMaxPooling1D AdaptiveMaxPooling2D AdaptiveMaxPooling3D Add
    AdditiveAttention AlphaDropout Attention AugMix AutoContrast Average AveragePooling1D
    AveragePooling2D AveragePooling3D AvgPool1D AvgPool2D AvgPool3D BatchNormalization
    BatchNormalizationV1 BatchNormalizationV2 Bidirectional BinaryAccuracy BinaryCrossentropy
    BinaryFocalCrossentropy BinaryIoU CTC CategoricalAccuracy CategoricalCrossentropy
    CategoricalFocalCrossentropy CategoricalGeneralizedCrossEntropy CategoricalHinge CategoryEncoding
    CenterCrop Circle Concatenate ConcordanceCorrelation Constant Constraint
    ContrastLimitedAdaptiveHistogramEqualization Conv1D Conv1DTranspose Conv2D Conv2DTranspose Conv3D
    Conv3DTranspose ConvLSTM1D ConvLSTM2D ConvLSTM3D Convolution1D Convolution1DTranspose Convolution2D
    Convolution2DTranspose Convolution3D Convolution3DTranspose CosineDecay CosineDecayRestarts
    CosineSimilarity Cropping1D Cropping2D Cropping3D CuDNNGRU CuDNNLSTM CutMix DTypePolicy
    DTypePolicyMap Dense DenseFeatures DepthwiseConv1D DepthwiseConv2D Dice Discretization Dot Dropout
    ELU EinsumDense Embedding Equalization ExponentialDecay F1Score FBetaScore FalseNegatives
    FalsePositives Flatten Float8QuantizationConfig FloatDTypePolicy Ftrl Functional GPTQConfig
    GPTQDTypePolicy GRU GRUCell GRUV1 GRUV2 GaussianDropout GaussianNoise GlobalAveragePooling1D
    GlobalAveragePooling2D GlobalAveragePooling3D GlobalAvgPool1D GlobalAvgPool2D GlobalAvgPool3D
    GlobalMaxPool1D GlobalMaxPool2D GlobalMaxPool3D GlobalMaxPooling1D GlobalMaxPooling2D
    GlobalMaxPooling3D GlorotNormal GlorotUniform GroupNormalization GroupQueryAttention HashedCrossing
    Hashing HeNormal HeUniform Hinge Huber Identity IdentityInitializer Initializer InputLayer InputSpec
    Int4DTypePolicy Int4QuantizationConfig Int8QuantizationConfig IntegerLookup InverseTimeDecay IoU
    KLDivergence KerasTensor L1 L1L2 L2 LSTM LSTMCell LSTMV1 LSTMV2 Lamb Layer LayerNormalization
    LayerNormalizationV1 LeakyReLU LearningRateSchedule LecunNormal LecunUniform Lion LogCosh
    LogCoshError Loss LossScaleOptimizer LossScaleOptimizerV3 Masking MaxNorm MaxNumBoundingBoxes
    MaxPool1D MaxPool2D MaxPool3D MaxPooling1D MaxPooling2D MaxPooling3D Maximum Mean MeanAbsoluteError
    MeanAbsolutePercentageError MeanIoU MeanMetricWrapper MeanSquaredError MeanSquaredLogarithmicError
    MelSpectrogram Merge Metric MinMaxNorm Minimum MixUp Model MultiHeadAttention MultiOptimizer
    Multiply Muon Nadam NonNeg Normalization OneHotIoU OneHotMeanIoU Ones Optimizer OptimizerMap
    Orthogonal OrthogonalInitializer OrthogonalRegularizer PReLU PearsonCorrelation Permute
    PiecewiseConstantDecay Pipeline Poisson Policy PolicyV1 PolynomialDecay Precision PrecisionAtRecall
    QuantizationConfig QuantizedDTypePolicy QuantizedFloat8DTypePolicy Quantizer R2Score
    RMSNormalization RMSprop RNN RandAugment RandomBrightness RandomColorDegeneration RandomColorJitter
    RandomContrast RandomCrop RandomElasticTransform RandomErasing RandomFlip RandomGaussianBlur
    RandomGrayscale RandomHue RandomInvert RandomNormal RandomPerspective RandomPosterization
    RandomRotation RandomSaturation RandomSharpness RandomShear RandomTranslation RandomUniform
    RandomZoom ReLU Recall RecallAtPrecision Regularizer RepeatVector Rescaling Reshape Resizing
    ReversibleEmbedding RootMeanSquaredError SGD STFT STFTInitializer STFTSpectrogram ScheduleFreeAdamW
    SensitivityAtSpecificity SeparableConv1D SeparableConv2D SeparableConvolution1D
    SeparableConvolution2D Sequential SimpleRNN SimpleRNNCell SlicingOpLambda Softmax Solarization
    SparseCategoricalAccuracy SparseCategoricalCrossentropy SparseTopKCategoricalAccuracy
    SpatialDropout1D SpatialDropout2D SpatialDropout3D SpecificityAtSensitivity SpectralNormalization
    SquaredHinge StackedRNNCells StringLookup Subtract Sum SyncBatchNormalization TFOpLambda
    TextVectorization ThresholdedReLU TimeDistributed TopKCategoricalAccuracy TrueNegatives
    TruePositives TruncatedNormal Tversky UnitNorm UnitNormalization UpSampling1D UpSampling2D
    UpSampling3D VarianceScaling Wrapper ZeroPadding1D ZeroPadding2D ZeroPadding3D Zeroes Zeros constant
    glorot_normal glorot_uniform he_normal he_uniform identity l1 l1_l2 l2 lecun_normal lecun_uniform
    max_norm min_max_norm non_neg ones orthogonal orthogonal_regularizer random_normal random_uniform
    stft truncated_normal unit_norm variance_scaling zeros
    """.split()
)
_FUNCTIONAL_CLASS_NAMES = frozenset({"function", "__function__"})


@dataclass
class _Judgement:
    rule: RuleId
    severity: Severity
    message: str
    detail: dict[str, Any] = field(default_factory=dict)


# -- config walk -----------------------------------------------------------------------------------------
def judge_config(config: Any, ctx: ScanContext, *, member: str | None) -> None:
    """Walk a Keras config tree and report every object that runs or imports code."""
    seen: set[tuple[RuleId, str]] = set()
    for judgement in _walk(config):
        key = (judgement.rule, judgement.message)
        if key in seen:
            continue
        seen.add(key)
        ctx.add(judgement.rule, judgement.severity, judgement.message, member=member, **judgement.detail)


def _walk(root: Any) -> Iterator[_Judgement]:
    stack: list[tuple[Any, int, str]] = [(root, 0, "")]
    visited = 0
    while stack:
        node, depth, layer = stack.pop()
        visited += 1
        if visited > MAX_CONFIG_NODES or depth > MAX_CONFIG_DEPTH:
            yield _Judgement(
                RuleId.SCAN_INCOMPLETE,
                Severity.HIGH,
                "Keras config too large or too deeply nested; the rest was not checked",
            )
            return
        if isinstance(node, dict):
            if "class_name" in node:
                config = node.get("config")
                name = config.get("name") if isinstance(config, dict) else None
                if isinstance(name, str) and name:
                    layer = name
                yield from _judge_object(node, layer)
                if node.get("class_name") == "Lambda":
                    continue  # reported as a whole; its function is the code already named
            stack.extend((v, depth + 1, layer) for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            stack.extend((v, depth + 1, layer) for v in node if isinstance(v, dict | list))


def _module_root(module: str) -> str:
    return module.strip().split(".", 1)[0]


def _is_keras_module(module: str) -> bool:
    module = module.strip()
    return _module_root(module) in KERAS_MODULE_ROOTS or module.startswith(KERAS_MODULE_PREFIXES)


def _judge_object(obj: dict[str, Any], layer: str) -> Iterator[_Judgement]:
    class_name = obj.get("class_name")
    module = obj.get("module")
    registered = obj.get("registered_name")
    config = obj.get("config")
    where = f" (in layer {layer!r})" if layer else ""
    detail: dict[str, Any] = {"class_name": class_name, "module": module, "layer": layer}
    if not isinstance(class_name, str):
        yield _Judgement(
            RuleId.MALFORMED, Severity.MEDIUM, f"Keras object with a non-string class_name{where}"
        )
        return
    if class_name == "Lambda":
        kind = _lambda_kind(config)
        yield _Judgement(
            RuleId.CODE_EXEC,
            Severity.CRITICAL,
            f"Keras Lambda layer {layer!r} runs {kind} when the model is loaded or called",
            detail,
        )
        return
    if class_name == "__lambda__":
        yield _Judgement(
            RuleId.CODE_EXEC,
            Severity.CRITICAL,
            f"serialized Python lambda (marshalled bytecode){where}",
            detail,
        )
        return
    if class_name in KERAS_VALUE_MARKERS:
        return
    if class_name in ("TFOpLambda", "SlicingOpLambda"):
        fn = config.get("function") if isinstance(config, dict) else None
        if isinstance(fn, str) and _dangerous_tf_function(fn):
            yield _Judgement(
                RuleId.CODE_EXEC,
                Severity.CRITICAL,
                f"Keras TF-op layer {layer!r} calls tf.{fn}{where}",
                detail,
            )
        return
    if class_name == "TFSMLayer":
        yield _Judgement(
            RuleId.CODE_UNKNOWN,
            Severity.HIGH,
            f"Keras TFSMLayer {layer!r} loads an external SavedModel from "
            f"{(config or {}).get('filepath') if isinstance(config, dict) else None!r}",
            detail,
        )
        return
    yield from _external_references(config, layer)  # (TFSMLayer's filepath is reported above)
    fn_name = config if class_name in _FUNCTIONAL_CLASS_NAMES and isinstance(config, str) else None
    names = {class_name, fn_name or "", str(registered or "").rsplit(">", 1)[-1]}
    if isinstance(module, str):
        names.add(module.rsplit(".", 1)[-1])
    dangerous_names = sorted(names & KERAS_DANGEROUS_NAMES.keys())
    if dangerous_names:
        yield _Judgement(
            RuleId.CODE_EXEC,
            Severity.CRITICAL,
            f"Keras config references {dangerous_names[0]!r}, which reads/writes files or runs "
            f"pickled code{where}",
            {**detail, "reason": KERAS_DANGEROUS_NAMES[dangerous_names[0]]},
        )
        return
    target = f"{module}.{fn_name or class_name}" if isinstance(module, str) else (fn_name or class_name)
    if isinstance(module, str) and module.strip():
        reason = DANGEROUS_MODULE_ROOTS.get(_module_root(module))
        if reason is not None:
            yield _Judgement(
                RuleId.CODE_EXEC,
                Severity.CRITICAL,
                f"Keras config imports {target!r} from module {module!r} (escapes safe_mode){where}",
                {**detail, "reason": reason},
            )
            return
        if not _is_keras_module(module):
            yield _Judgement(
                RuleId.CODE_UNKNOWN,
                Severity.HIGH,
                f"Keras config imports custom object {target!r} (module outside Keras: user code runs "
                f"on load){where}",
                detail,
            )
            return
    if isinstance(registered, str) and ">" in registered:
        package = registered.split(">", 1)[0]
        if _module_root(package) not in KERAS_MODULE_ROOTS:
            yield _Judgement(
                RuleId.CODE_UNKNOWN,
                Severity.HIGH,
                f"Keras config uses registered custom object {registered!r}{where}",
                detail,
            )
            return
    if module is None and class_name not in _FUNCTIONAL_CLASS_NAMES:
        plain = class_name.rsplit(">", 1)[-1]
        package = class_name.split(">", 1)[0] if ">" in class_name else ""
        if plain not in KNOWN_KERAS_CLASSES or (package and _module_root(package) not in KERAS_MODULE_ROOTS):
            yield _Judgement(
                RuleId.CODE_UNKNOWN,
                Severity.HIGH,
                f"Keras config uses class {class_name!r}, which is not a Keras built-in (custom code){where}",
                detail,
            )


# Config keys whose string value a Keras layer reads as a file or fetches when the model loads
# (StringLookup/IntegerLookup/TextVectorization take `vocabulary` as a list *or a path*).
_READ_KEYS = frozenset({"vocabulary", "filepath", "path", "file", "filename", "fname", "origin", "url",
                        "vocabulary_path", "vocab_file", "idf_weights", "weights", "model_path"})  # fmt: skip
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _external_references(config: Any, layer: str) -> Iterator[_Judgement]:
    """File paths and URLs a layer's configuration makes the loader read (issue 14: next attacks)."""
    if not isinstance(config, dict):
        return
    for key, value in config.items():
        if not isinstance(value, str) or not value.strip() or key == "name":
            continue
        if _URL.match(value.strip()):
            what = f"fetches {value[:200]!r}"
        elif key in _READ_KEYS:
            what = f"reads the file {value[:200]!r}"
        else:
            continue
        yield _Judgement(
            RuleId.ARCHIVE_UNSAFE,
            Severity.HIGH,
            f"Keras layer {layer!r} {what} (config key {key!r}) when the model loads: data from outside "
            "the model file, never scanned",
            {"layer": layer, "config_key": key, "reference": value[:200]},
        )


def _lambda_kind(config: Any) -> str:
    if not isinstance(config, dict):
        return "Python code"
    fn = config.get("function")
    if isinstance(fn, dict) and fn.get("class_name") == "__lambda__":
        return "marshalled Python bytecode"
    if isinstance(fn, list):
        return "marshalled Python bytecode"
    if isinstance(fn, str):
        return f"the Python function {config.get('module') or '?'}.{fn}"
    if isinstance(fn, dict):
        return f"the Python function {fn.get('module') or '?'}.{fn.get('config') or fn.get('class_name')}"
    return "Python code"


def _dangerous_tf_function(fn: str) -> bool:
    """tf.* functions a TF-op layer may call that touch files, run Python or bypass the graph."""
    fn = fn.strip()
    prefixes = ("io.", "compat.v1.io.", "raw_ops.", "py_function", "numpy_function", "compat.v1.py_func")
    prefixes += ("debugging.", "summary.", "saved_model.", "data.", "compat.v1.gfile", "print")
    return fn.startswith(prefixes) or fn in ("py_func", "load_op_library", "load_library")


# -- .keras zip ------------------------------------------------------------------------------------------
def sniff_keras(head: bytes, stream: BinaryIO) -> bool:
    """A zip (data before it allowed, as zipfile allows) listing config.json at its root, beside
    metadata.json or model.weights.h5. Keras needs neither of those to load the config, hence either."""
    if head[:4] != b"PK\x03\x04" and not sniff_zip(head, stream):
        return False
    names = central_names(stream)
    return CONFIG_MEMBER in names and bool(names & {METADATA_MEMBER, WEIGHTS_MEMBER})


@register(Format.KERAS, sniff=sniff_keras, priority=90)
def scan_keras(stream: BinaryIO, ctx: ScanContext) -> None:
    """Every member scanned as an archive member; config.json walked; metadata.json recorded."""
    listing = scan_zip_archive(stream, ctx, what="Keras archive", handled=lambda e: e.name == CONFIG_MEMBER)
    configs = [e for e in listing.entries if e.name == CONFIG_MEMBER]
    if not configs:  # the sniffer saw it in the central directory, the structural read did not
        ctx.add(RuleId.MALFORMED, Severity.HIGH, "Keras archive without a readable config.json")
        return
    for entry in configs:  # duplicates were already reported; judge every copy
        config = _read_json_member(stream, entry, ctx)
        if config is not None:
            judge_config(config, ctx, member=CONFIG_MEMBER)
    for entry in listing.entries:
        if entry.name == METADATA_MEMBER:
            metadata = _read_json_member(stream, entry, ctx)
            if isinstance(metadata, dict) and isinstance(metadata.get("keras_version"), str):
                ctx.set_metadata("keras_version", metadata["keras_version"])


def _read_json_member(stream: BinaryIO, entry: ZipEntry, ctx: ScanContext) -> Any:
    limit = ctx.limits.max_metadata_bytes
    if entry.uncompressed_size > limit:
        ctx.incomplete(f"Keras {entry.name} is {entry.uncompressed_size} bytes, over the metadata limit")
        return None
    content = open_zip_member(stream, entry, ctx)
    if content is None:
        return None
    with content:
        raw = content.read(limit + 1)
    return _parse_json(raw, ctx, what=f"Keras {entry.name}", member=entry.name)


def _parse_json(raw: bytes | str, ctx: ScanContext, *, what: str, member: str | None = None) -> Any:
    try:
        return json.loads(raw)  # bytes: UTF-8/16/32 detected exactly as Keras's own json.loads does
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        ctx.add(RuleId.MALFORMED, Severity.HIGH, f"{what} is not valid JSON: {exc}", member=member)
        ctx.incomplete(f"{what} could not be checked for code")
        return None


# -- legacy .h5 ------------------------------------------------------------------------------------------
_EXTERNAL = {
    "external-link": "is an external link to",
    "external-storage": "keeps its raw data in the external file(s)",
    "virtual-dataset": "is a virtual dataset:",
}


def _judge_tree(reader: HDF5Reader, ctx: ScanContext) -> None:
    """What the HDF5 library reads from other files when the model loads (issue 14: next attacks)."""
    try:
        walk = walk_tree(reader)
    except (HDF5Error, struct.error, IndexError, ValueError) as exc:
        ctx.add(RuleId.MALFORMED, Severity.HIGH, f"HDF5 group tree not understood: {exc}")
        ctx.incomplete("HDF5 objects could not all be visited, so external references were not checked")
        return
    for ref in walk.references:
        what = _EXTERNAL.get(ref.kind, f"is a {ref.kind} to")
        ctx.add(
            RuleId.ARCHIVE_UNSAFE,
            Severity.HIGH,
            f"HDF5 object {ref.path} {what} {ref.target[:200]!r}: the library reads that when the model "
            "loads, from outside the scanned file",
            kind=ref.kind,
            object=ref.path,
            target=ref.target[:200],
        )
    for where in walk.unwalked:
        ctx.incomplete(f"HDF5 group {where} was not walked, so its links were not checked")


@register(Format.KERAS_H5, sniff=sniff_hdf5, priority=80)
def scan_hdf5(stream: BinaryIO, ctx: ScanContext) -> None:
    """Root attributes `model_config`/`training_config` walked as Keras configs; weights never read."""
    try:
        reader = HDF5Reader(stream, max_value=ctx.limits.max_metadata_bytes)
        attrs = reader.root_attributes()
    except (HDF5Error, struct.error, IndexError, ValueError) as exc:
        ctx.add(RuleId.MALFORMED, Severity.HIGH, f"HDF5 structure not understood: {exc}")
        ctx.incomplete("HDF5 root attributes could not be read, so a Keras config in them was not checked")
        return
    if attrs.dense:
        ctx.incomplete("HDF5 root group keeps attributes in dense storage, which the scanner does not read")
    for name in attrs.unreadable:
        ctx.incomplete(f"HDF5 root attribute {name!r} uses a shared datatype the scanner does not read")
    if reader.superblock:
        ctx.add(
            RuleId.MALFORMED,
            Severity.MEDIUM,
            f"HDF5 file has a {reader.superblock}-byte user block before the HDF5 data (a polyglot)",
        )
    found = False
    for key in ("model_config", "training_config"):
        for raw in attrs.strings.get(key, []):
            found = True
            config = _parse_json(raw, ctx, what=f"HDF5 attribute {key}")
            if config is not None:
                judge_config(config, ctx, member=None)
    for key in attrs.others:
        if key in ("model_config", "training_config"):
            ctx.add(RuleId.MALFORMED, Severity.HIGH, f"HDF5 attribute {key} is not a string")
    _judge_tree(reader, ctx)
    versions = attrs.strings.get("keras_version")
    if versions:
        ctx.set_metadata("keras_version", versions[0])
    if found:
        ctx.set_metadata("keras_model_config", True)
