"""Which globals a pickle may import: deny and allow lists as data, a generated catalogue, and rules.

A pickle runs code by importing a callable (GLOBAL, STACK_GLOBAL, INST, EXT*) and calling it (REDUCE,
BUILD, OBJ, NEWOBJ). Every imported global gets one of four answers:

- DENY (MS-CODE-EXEC, critical): runs commands, evaluates code, loads another pickle, touches files,
  sockets or the interpreter, or reaches arbitrary attributes/calls (getattr, attrgetter, partial ...).
  This includes the dangerous surfaces *inside* trusted packages (`numpy.f2py`, `torch.hub`,
  `pandas.io`, ...) and any catalogued name whose constructor or signature takes a path, URL or code.
- ALLOW: builds data. Hand-listed core names below, plus what the generated catalogue
  (`trusted_globals.json`, written by scripts/gen_trusted_globals.py from the installed libraries, with
  their versions) says is a class, a constant or a reconstruction helper of a trusted ML package.
- DATA (MS-DATA-REFERENCE, a warning): could only build data but is not vouched for name by name: a
  function of a trusted package referenced as a value (an activation, a score function) and never
  called while loading, or a class-shaped name of a trusted package the catalogue does not know
  (another library version). Called while loading, such a function is UNKNOWN instead.
- UNKNOWN (MS-CODE-UNKNOWN, high): everything else, e.g. a user's own class. Not proof of harm, but
  nothing we can vouch for. Names that say they load, open, fetch, spawn or evaluate are DENY instead.

Whether a name is called is only known after the walk, so a judgement carries `escalate_on`: what the
walker must see (any call, or a call that reaches `__init__`) for it to become `escalated` instead.

Matching is on the dotted path after normalising: whitespace stripped, Python 2 aliases mapped the way
the unpickler maps them (`__builtin__` -> `builtins`, `cPickle` -> `pickle`, `commands` -> `subprocess`),
and both the original and the mapped name are judged (deny if either is denied, allow if the name the
loader would really import is allowed). A denied module denies
all its submodules (`os` denies `os.path.join`: harmless on its own, but no model needs it and allowing
parts of `os` invites mistakes). A name component that is a dunder (`__globals__`, `__builtins__`,
`__class__` ...) is denied anywhere: protocol 4 resolves dotted names attribute by attribute, so
`torch._utils._rebuild_tensor_v2.__globals__` would hand out a module's globals.

Order of precedence: dunder traversal > exact deny > exact allow > module deny > TorchScript class >
catalogue > dangerous-looking name > class-shaped name of a trusted package > unknown.
"""

from __future__ import annotations

import _compat_pickle
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any, Literal

# --------------------------------------------------------------------------------------------------
# Denylist: whole modules (and their submodules). Each reason says what a pickle could do with it.
# --------------------------------------------------------------------------------------------------
_PROCESS = "starts processes or runs shell commands"
_FILES = "reads, writes or deletes files"
_NET = "opens network connections or downloads"
_CODE = "compiles, evaluates or imports code"
_NESTED = "loads another pickle/serialized object (a payload hidden one level down)"
_INTERP = "reaches interpreter internals (frames, modules, objects, signals, exit)"
_CALLS = "builds or redirects calls and attribute access, hiding the real callee"

DENY_MODULES: dict[str, str] = {
    "os": f"os.system/popen/exec*/spawn*: {_PROCESS}; also file and environment access",
    "posix": f"the C module behind os on POSIX: {_PROCESS}",
    "nt": f"the C module behind os on Windows: {_PROCESS}",
    "subprocess": _PROCESS,
    "_posixsubprocess": f"fork_exec: {_PROCESS}",
    "pty": f"pty.spawn: {_PROCESS}",
    "multiprocessing": f"{_PROCESS} (Process, Pool, managers listen on sockets)",
    "_multiprocessing": _PROCESS,
    "concurrent": f"executors run arbitrary callables in workers: {_PROCESS}",
    "asyncio": f"create_subprocess_exec/shell: {_PROCESS}; also sockets",
    "threading": "Thread/Timer run a callable later, outside the load call",
    "_thread": "start_new_thread runs a callable",
    "signal": f"installs handlers, sends signals: {_INTERP}",
    "sys": f"sys.modules, settrace, exit: {_INTERP}",
    "gc": f"gc.get_objects/get_referrers reach every live object: {_INTERP}",
    "inspect": f"frames and function globals: {_INTERP}",
    "atexit": "registers a callable to run at interpreter exit",
    "runpy": f"run_module/run_path execute Python files: {_CODE}",
    "code": f"InteractiveInterpreter/InteractiveConsole run source: {_CODE}",
    "codeop": f"compiles source: {_CODE}",
    "importlib": f"import_module and loaders: {_CODE}",
    "imp": f"legacy importer: {_CODE}",
    "pkgutil": f"resolve_name imports anything: {_CODE}",
    "zipimport": f"imports code from zip files: {_CODE}",
    "marshal": f"marshal.loads builds code objects: {_CODE}",
    "types": f"FunctionType/CodeType/ModuleType build functions from bytecode: {_CODE}",
    "pdb": f"debugger: run/runcall/set_trace execute code: {_CODE}",
    "bdb": f"debugger base: run/runeval: {_CODE}",
    "trace": f"Trace.run/runctx execute code: {_CODE}",
    "timeit": f"timeit(stmt) compiles and runs a string: {_CODE}",
    "cProfile": f"run/runctx execute a string: {_CODE}",
    "profile": f"run/runctx execute a string: {_CODE}",
    "doctest": f"runs code found in strings: {_CODE}",
    "unittest": f"mock.patch and loaders import/run code: {_CODE}",
    "pydoc": f"pipepager/tempfilepager run shell commands, locate imports: {_CODE}",
    "idlelib": f"IDE internals run code: {_CODE}",
    "site": f"addsitedir executes .pth files: {_CODE}",
    "sitecustomize": _CODE,
    "ensurepip": f"runs pip: {_CODE}",
    "pip": f"installs and imports packages: {_CODE}",
    "setuptools": f"build commands run code: {_CODE}",
    "distutils": f"spawn/compile: {_CODE}",
    "venv": f"creates environments, runs pip: {_PROCESS}",
    "ctypes": "calls any C function in any library (CDLL, memmove, system)",
    "_ctypes": "calls any C function in any library",
    "cffi": "loads and calls native code",
    "webbrowser": f"webbrowser.open runs a browser command: {_PROCESS}",
    "antigravity": "opens a web browser on import",
    "shutil": f"rmtree/copy/move/unpack_archive: {_FILES}",
    "tempfile": f"creates files and directories: {_FILES}",
    "glob": "enumerates the file system",
    "pathlib": f"Path.read_text/write_bytes/unlink: {_FILES}",
    "fileinput": f"reads files: {_FILES}",
    "linecache": f"getline reads any file: {_FILES}",
    "io": f"io.open/FileIO: {_FILES}",
    "_io": f"the C module behind io.open/FileIO: {_FILES}",
    "mmap": f"maps files into memory: {_FILES}",
    "zipfile": f"ZipFile opens files, extractall writes them: {_FILES}",
    "tarfile": f"tarfile.open/extractall: {_FILES}",
    "gzip": f"gzip.open/GzipFile: {_FILES}",
    "bz2": f"bz2.open/BZ2File: {_FILES}",
    "lzma": f"lzma.open/LZMAFile: {_FILES}",
    "shelve": f"shelve.open unpickles a database: {_NESTED}",
    "dbm": f"opens database files: {_FILES}",
    "sqlite3": f"connect opens files and can load extensions: {_FILES}",
    "pickle": f"pickle.loads/load: {_NESTED}",
    "_pickle": f"C pickle.loads/load: {_NESTED}",
    "pickletools": "pickle internals; no model needs them",
    "dill": f"dill.loads: {_NESTED} (and it pickles code objects)",
    "cloudpickle": f"cloudpickle.loads: {_NESTED}",
    "joblib": f"joblib.load: {_NESTED} (NumpyArrayWrapper is allowed by exact name)",
    "copyreg": "extension registry and reducers: changes what later opcodes import (a few names allowed)",
    "functools": f"partial/reduce/partialmethod: {_CALLS}",
    "operator": f"attrgetter/methodcaller/itemgetter/call: {_CALLS}",
    "_operator": f"C module behind operator: {_CALLS}",
    "socket": _NET,
    "_socket": _NET,
    "ssl": _NET,
    "socketserver": f"{_NET} (listens)",
    "select": "waits on sockets and files",
    "selectors": "waits on sockets and files",
    "http": _NET,
    "urllib": _NET,
    "urllib2": _NET,
    "urllib3": _NET,
    "requests": _NET,
    "httpx": _NET,
    "aiohttp": _NET,
    "ftplib": _NET,
    "smtplib": f"{_NET} (sends mail)",
    "poplib": _NET,
    "imaplib": _NET,
    "nntplib": _NET,
    "telnetlib": _NET,
    "xmlrpc": f"{_NET} (remote calls)",
    "wsgiref": f"{_NET} (serves HTTP)",
    "logging": "logging.config.dictConfig imports and calls factories by name; listen() opens a socket",
    "sysconfig": "probes the host (paths, config vars); no model needs it",
    "platform": "platform.architecture/uname run external commands",
    "resource": "setrlimit: denial of service on the loading process",
    "pwd": "reads the user database",
    "grp": "reads the group database",
    "spwd": "reads shadow passwords",
    "getpass": "reads from the terminal and environment",
    "fcntl": "low-level file descriptor control",
    "termios": "terminal control",
    "_winapi": f"CreateProcess: {_PROCESS}",
    "msvcrt": "Windows C runtime: file descriptors and console",
    "winreg": "reads/writes the Windows registry",
    "_winreg": "reads/writes the Windows registry",
    # -- ML libraries: the parts that load, compile or reach outside the file --------------------------
    "torch.hub": f"downloads and imports repositories: {_NET}, {_CODE}",
    "torch.jit": f"torch.jit.load runs TorchScript: {_CODE} (a few torch.jit._pickle list builders allowed)",
    "torch._C": f"C++ bindings incl. TorchScript import and library loading: {_CODE}",
    "torch.ops": f"torch.ops.load_library dlopens a library: {_CODE}",
    "torch._ops": f"operator registry and library loading: {_CODE}",
    "torch.classes": f"custom C++ classes; load_library: {_CODE}",
    "torch._classes": f"custom C++ classes; load_library: {_CODE}",
    "torch.fx": f"GraphModule pickles exec generated Python on load: {_CODE}",
    "torch.package": f"PackageImporter imports code shipped in the archive: {_CODE}",
    "torch.utils.cpp_extension": f"compiles and loads C++: {_CODE}",
    "torch._dynamo": f"compiler internals: {_CODE}",
    "torch._inductor": f"generates and compiles code: {_CODE}",
    "torch.distributed": f"{_NET} (rpc, process groups)",
    "torch.multiprocessing": _PROCESS,
    "torch.serialization": f"torch.load/_load/_legacy_load: {_NESTED} (_get_layout allowed)",
    "numpy.f2py": f"compiles and imports Fortran/C: {_CODE}",
    "numpy.distutils": f"build commands: {_CODE}",
    "numpy.ctypeslib": "load_library loads native code",
    "numpy.testing": "test helpers run subprocesses and import modules",
    "numpy.lib.npyio": f"np.load/loadtxt/save: {_FILES}; np.load(allow_pickle=True) is {_NESTED}",
    "numpy.lib._npyio_impl": f"np.load/loadtxt/save: {_FILES}",
    "numpy.lib.format": f"read_array(allow_pickle=True): {_NESTED}",
    "numpy.lib._datasource": f"DataSource downloads and opens files: {_NET}",
    "sklearn.datasets": f"fetch_*/load_svmlight_file: {_NET}, {_FILES}",
    "sklearn.externals": f"vendored joblib.load: {_NESTED}",
    "tensorflow.io": _FILES,
    "keras.saving": f"load_model: {_NESTED}",
    "torch.utils.data": f"DataLoader workers fork when iterated (builtins.list can iterate): {_PROCESS}",
    "torch.utils.tensorboard": f"SummaryWriter writes event files: {_FILES}",
    "torch.library": f"defines and loads operator libraries: {_CODE}",
    "torch.compiler": f"compiles code: {_CODE}",
    "torch.cuda": "initialises drivers and loads native libraries",
    "pandas.io": f"read_*/to_* and HDFStore: {_FILES}; read_pickle is {_NESTED}",
    "pandas.core.computation": f"pandas.eval/DataFrame.query evaluate expression strings: {_CODE}",
    "pandas.plotting": "plotting backends are imported by name (entry points)",
    "pandas.util": "test and version helpers that import modules by name",
    "scipy.io": f"loadmat/wavfile/netcdf: {_FILES}",
    "scipy.datasets": f"downloads data sets: {_NET}",
    "scipy._lib._ccallback": "LowLevelCallable calls raw function pointers",
    "scipy.LowLevelCallable": "calls raw function pointers",
    "sklearn.utils.parallel": f"Parallel runs callables in worker processes: {_PROCESS}",
    "sklearn.utils._testing": f"test helpers: {_CODE}",
    "xgboost.tracker": f"RabitTracker listens on sockets: {_NET}",
    "xgboost.collective": f"communicator: {_NET}",
    "xgboost.dask": f"distributed training: {_NET}",
    "xgboost.spark": f"distributed training: {_NET}",
    "xgboost.federated": f"federated server: {_NET}",
    "lightgbm.dask": f"distributed training: {_NET}",
}

# Packages whose data-building classes and helpers the generated catalogue vouches for. Their dangerous
# surfaces are the DENY_MODULES entries above; the catalogue skips those modules and marks any other
# name whose constructor or signature takes a path, URL, command or code (RISKY_PARAMETER).
TRUSTED_PACKAGES: tuple[str, ...] = (
    "numpy", "scipy", "sklearn", "pandas", "torch", "xgboost", "lightgbm", "catboost",
    # standard-library value types that appear in real pickles
    "datetime", "decimal", "fractions", "uuid", "collections", "ipaddress", "enum",
)  # fmt: skip
# Helpers that libraries name in their own __reduce__ to rebuild an object from plain state (Cython's
# generated __pyx_unpickle_*, numpy/pandas/torch _reconstruct/_unpickle/_new_/_rebuild, sklearn newObj).
RECONSTRUCTOR_NAME = re.compile(
    r"^(__pyx_unpickle_\w+|_reconstruct\w*|_unpickle\w*|_new_\w+|_rebuild\w*|newObj|_frombuffer|"
    r"__\w+_ctor|_restore\w*|_from_pickle\w*|unpickle\w*)$"
)
# Parameter names that mean "something outside the data": a file, a directory, a URL, a command, code.
RISKY_PARAMETER = re.compile(
    r"(^|_)(path|paths|filename|filenames|file|files|fname|fid|fd|filepath|dir|directory|folder|url|uri|"
    r"urls|host|port|address|socket|command|cmd|shell|code|expr|expression|module_name|library)($|_)"
)
# What a name says it does, for names nobody vouches for (any package): deny rather than "unknown".
DANGEROUS_NAME = re.compile(
    r"(^|[._])(system|popen|spawn\w*|exec\w*|eval|compile|import_module|load\w*|open\w*|urlopen|"
    r"urlretrieve|download\w*|fetch\w*|read_\w+|from_file|remove|unlink|rmtree|run_path|run_module|"
    r"call_?function|getattr|setattr)$",
    re.IGNORECASE,
)
CATALOGUE_FILE = Path(__file__).with_name("trusted_globals.json")

# Exact names (module.qualname) denied even though their module is not denied wholesale.
DENY_GLOBALS: dict[str, str] = {
    "builtins.eval": _CODE,
    "builtins.exec": _CODE,
    "builtins.compile": _CODE,
    "builtins.open": _FILES,
    "builtins.__import__": _CODE,
    "builtins.__build_class__": f"creates classes from a function body: {_CODE}",
    "builtins.getattr": f"getattr(obj, 'system'): {_CALLS}",
    "builtins.setattr": "monkey-patches any object the pickle can reach",
    "builtins.delattr": "deletes attributes of any object the pickle can reach",
    "builtins.globals": _INTERP,
    "builtins.locals": _INTERP,
    "builtins.vars": _INTERP,
    "builtins.breakpoint": f"starts a debugger: {_CODE}",
    "builtins.input": "blocks on and reads from the terminal",
    "builtins.help": f"pydoc pager runs a shell command: {_PROCESS}",
    "builtins.exit": "terminates the loading process",
    "builtins.quit": "terminates the loading process",
    "builtins.type": "type(name, bases, dict) builds new classes with arbitrary methods",
    "builtins.memoryview": "raw memory views; no model needs them",
    "builtins.classmethod": "descriptor construction; no model needs it",
    "builtins.staticmethod": "descriptor construction; no model needs it",
    "builtins.property": "descriptor construction; no model needs it",
    "builtins.super": "reaches base-class methods of arbitrary objects",
    "builtins.object.__reduce__": _CALLS,
    "numpy.load": f"{_FILES}; allow_pickle=True is {_NESTED}",
    "numpy.loadtxt": _FILES,
    "numpy.genfromtxt": _FILES,
    "numpy.fromfile": _FILES,
    "numpy.fromregex": _FILES,
    "numpy.save": _FILES,
    "numpy.savez": _FILES,
    "numpy.savez_compressed": _FILES,
    "numpy.savetxt": _FILES,
    "numpy.memmap": f"maps any file: {_FILES}",
    "numpy.core.memmap": f"maps any file: {_FILES}",
    "numpy._core.memmap": f"maps any file: {_FILES}",
    "numpy.DataSource": _NET,
    "torch.load": _NESTED,
    "torch.save": _FILES,
    "torch.from_file": f"maps any file into a tensor: {_FILES}",
    "torch.storage._load_from_bytes": f"torch.load(weights_only=False) of embedded bytes: {_NESTED}",
    "torch._utils._rebuild_device_tensor_from_numpy": "rebuilds from a numpy object; unused by torch.save",
    "joblib.numpy_pickle_compat.NDArrayWrapper": f"np.load(allow_pickle=True) of a sidecar file: {_NESTED}",
    "joblib.numpy_pickle_compat.ZNDArrayWrapper": f"reads a sidecar zlib file as an array: {_FILES}",
    "sklearn.utils.fixes._joblib_parallel_args": _PROCESS,
}

# --------------------------------------------------------------------------------------------------
# Allowlist: the core names every PyTorch / NumPy / joblib file uses to rebuild data. Most are also in
# the generated catalogue; they stay explicit so that they never depend on it (and because some live
# in modules denied as a whole: torch.serialization, torch.jit, copyreg, joblib). Everything else that
# is allowed comes from the catalogue: this list does not grow name by name.
# --------------------------------------------------------------------------------------------------
_TENSOR = "rebuilds a tensor from storage/metadata; calls nothing it is given"
_STORAGE = "typed storage class named by torch.save persistent ids; instantiated only by the loader"
_DTYPE = "a constant (dtype/layout/qscheme/memory format) object, not called"
_CONTAINER = "plain container type; calling it only builds data"
_NP_ARRAY = "rebuilds an ndarray/scalar from bytes and a dtype"

ALLOW_GLOBALS: dict[str, str] = {
    # builtins: plain data types (protocol 0-2 pickles name them; protocol 3+ mostly use opcodes)
    **{
        f"builtins.{n}": _CONTAINER
        for n in (
            "set",
            "frozenset",
            "slice",
            "complex",
            "bytearray",
            "bytes",
            "range",
            "list",
            "dict",
            "tuple",
            "str",
            "int",
            "float",
            "bool",
        )
    },
    "builtins.object": "base for copyreg._reconstructor(cls, object, None); object() does nothing",
    "collections.OrderedDict": _CONTAINER,
    "collections.defaultdict": (
        "container; the default factory is its own imported global, judged on its own, and is only "
        "called later with no arguments"
    ),
    "collections.Counter": _CONTAINER,
    "collections.deque": _CONTAINER,
    "copyreg._reconstructor": "protocol 0/1 object creation: base.__new__(cls); cls and base are judged",
    "copyreg.__newobj__": "protocol 0/1 spelling of NEWOBJ: cls.__new__(cls, *args); cls is judged",
    "copyreg.__newobj_ex__": "protocol 0/1 spelling of NEWOBJ_EX; cls is judged",
    "_codecs.encode": "numpy protocol 2 pickles encode raw bytes with encode(str, 'latin1')",
    # numpy
    **{
        f"{m}.{n}": _NP_ARRAY
        for m in ("numpy.core.multiarray", "numpy._core.multiarray")
        for n in ("_reconstruct", "scalar")
    },
    "numpy.core.numeric._frombuffer": _NP_ARRAY + " (protocol 5 pickles)",
    "numpy._core.numeric._frombuffer": _NP_ARRAY + " (protocol 5 pickles)",
    "numpy.ndarray": "array type passed to _reconstruct",
    "numpy.dtype": "dtype constructor from a type string",
    "numpy.matrix": "ndarray subclass",
    "numpy.matrixlib.defmatrix.matrix": "ndarray subclass",
    "numpy.ma.core._mareconstruct": "masked array reconstruction",
    "numpy.ma.core.MaskedArray": "masked array type",
    "numpy.random._pickle.__randomstate_ctor": "RandomState from a bit generator name",
    "numpy.random._pickle.__generator_ctor": "Generator from a bit generator name",
    "numpy.random._pickle.__bit_generator_ctor": "bit generator from its name",
    "numpy.random.mtrand.RandomState": "random state object",
    "numpy.random._mt19937.MT19937": "bit generator",
    "numpy.random._pcg64.PCG64": "bit generator",
    "numpy.random._pcg64.PCG64DXSM": "bit generator",
    "numpy.random._philox.Philox": "bit generator",
    "numpy.random._sfc64.SFC64": "bit generator",
    "numpy.random.bit_generator.SeedSequence": "seed sequence",
    # torch: tensors, storages, dtypes
    **{
        f"torch._utils.{n}": _TENSOR
        for n in (
            "_rebuild_tensor",
            "_rebuild_tensor_v2",
            "_rebuild_tensor_v3",
            "_rebuild_parameter",
            "_rebuild_parameter_with_state",
            "_rebuild_qtensor",
            "_rebuild_sparse_tensor",
            "_rebuild_nested_tensor",
            "_rebuild_meta_tensor_no_storage",
            "_rebuild_wrapper_subclass",
            "_rebuild_device_tensor_from_cpu_tensor",
        )
    },
    "torch._tensor._rebuild_from_type_v2": "re-types a rebuilt tensor; the function it calls is judged",
    "torch._tensor._rebuild_from_type": "re-types a rebuilt tensor; the function it calls is judged",
    "torch.serialization._get_layout": "maps a layout name to a torch.layout constant",
    "torch.nn.parameter.Parameter": "tensor subclass for weights",
    "torch.nn.parameter.Buffer": "tensor subclass for buffers",
    "torch.nn.parameter.UninitializedParameter": "lazy parameter placeholder",
    "torch.Tensor": "tensor type",
    "torch._tensor.Tensor": "tensor type",
    "torch.Size": "shape tuple",
    "torch.device": "device descriptor (a name, no side effects)",
    "torch.torch_version.TorchVersion": "version string",
    "torch.storage.UntypedStorage": _STORAGE,
    "torch.storage.TypedStorage": _STORAGE,
    "torch.UntypedStorage": _STORAGE,
    "torch.TypedStorage": _STORAGE,
    **{
        f"torch.{n}Storage": _STORAGE
        for n in (
            "Float",
            "Double",
            "Half",
            "BFloat16",
            "Long",
            "Int",
            "Short",
            "Char",
            "Byte",
            "Bool",
            "ComplexFloat",
            "ComplexDouble",
            "QUInt8",
            "QInt8",
            "QInt32",
            "QUInt4x2",
            "QUInt2x4",
        )
    },
    **{
        f"torch.{n}": _DTYPE
        for n in (
            "float16",
            "float32",
            "float64",
            "bfloat16",
            "half",
            "float",
            "double",
            "int8",
            "int16",
            "int32",
            "int64",
            "uint8",
            "uint16",
            "uint32",
            "uint64",
            "bool",
            "complex32",
            "complex64",
            "complex128",
            "cfloat",
            "cdouble",
            "chalf",
            "long",
            "int",
            "short",
            "quint8",
            "qint8",
            "qint32",
            "quint4x2",
            "quint2x4",
            "float8_e4m3fn",
            "float8_e5m2",
            "float8_e4m3fnuz",
            "float8_e5m2fnuz",
            "strided",
            "sparse_coo",
            "sparse_csr",
            "sparse_csc",
            "sparse_bsr",
            "sparse_bsc",
            "_mkldnn",
            "per_tensor_affine",
            "per_channel_affine",
            "per_tensor_symmetric",
            "per_channel_symmetric",
            "per_channel_affine_float_qparams",
            "contiguous_format",
            "channels_last",
            "channels_last_3d",
            "preserve_format",
        )
    },
    # torch.jit._pickle: list builders the TorchScript pickler emits (torch.jit itself is denied)
    **{
        f"torch.jit._pickle.{n}": "TorchScript list/tag builder; builds data only"
        for n in (
            "build_intlist",
            "build_floatlist",
            "build_doublelist",
            "build_boollist",
            "build_tensorlist",
            "build_complexlist",
            "build_tensor_from_id",
            "restore_type_tag",
        )
    },
    # joblib (joblib itself is denied; only the array placeholder is allowed)
    "joblib.numpy_pickle.NumpyArrayWrapper": "placeholder for an array whose bytes follow in the file",
    # scipy sparse matrices inside scikit-learn models
    **{
        f"scipy.sparse.{m}.{c}": "sparse matrix container"
        for m, cs in (
            ("_csr", ("csr_matrix", "csr_array")),
            ("_csc", ("csc_matrix", "csc_array")),
            ("_coo", ("coo_matrix", "coo_array")),
            ("csr", ("csr_matrix",)),
            ("csc", ("csc_matrix",)),
            ("coo", ("coo_matrix",)),
        )
        for c in cs
    },
}

# TorchScript archives name their own compiled classes under __torch__; the code is in code/*.py of
# the same archive (covered separately), so inside a TorchScript archive these are not unknown.
TORCHSCRIPT_PREFIX = "__torch__"

_INTERNAL_DUNDERS = frozenset(
    {
        "__builtins__",
        "__globals__",
        "__dict__",
        "__class__",
        "__subclasses__",
        "__code__",
        "__loader__",
        "__spec__",
        "__self__",
        "__func__",
        "__closure__",
        "__getattribute__",
        "__reduce__",
        "__reduce_ex__",
        "__init_subclass__",
        "__base__",
        "__bases__",
        "__mro__",
    }
)
_CLASS_NAME = re.compile(r"[A-Z][A-Za-z0-9_]*\Z")


class GlobalVerdict(StrEnum):
    DENY = "deny"
    ALLOW = "allow"
    DATA = "data"  # builds data, not vouched for by name: a warning (MS-DATA-REFERENCE)
    UNKNOWN = "unknown"


# What turns a judgement into its escalation: any call of the name, or a call that runs __init__
# (REDUCE/OBJ/INST, or passing a class to something that calls it), as opposed to NEWOBJ + BUILD.
Escalation = Literal["any_call", "init_call"]
_NEW_ONLY_CALLS = frozenset({"NEWOBJ", "NEWOBJ_EX", "BUILD"})


@dataclass(frozen=True)
class GlobalJudgement:
    verdict: GlobalVerdict
    name: str  # normalised dotted path that was judged
    reason: str
    escalate_on: Escalation | None = None
    escalated: tuple[GlobalVerdict, str] | None = None  # verdict and reason once escalate_on is seen

    def final(self, called_by: list[str]) -> tuple[GlobalVerdict, str]:
        """The verdict once the walk knows who called this name (see `escalate_on`)."""
        if self.escalate_on is None or self.escalated is None or not called_by:
            return self.verdict, self.reason
        if self.escalate_on == "init_call" and all(c in _NEW_ONLY_CALLS for c in called_by):
            return self.verdict, self.reason
        return self.escalated


@cache
def catalogue() -> dict[str, Any]:
    """The generated catalogue (empty if the file is missing: every name is then judged by rules)."""
    try:
        return json.loads(CATALOGUE_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"versions": {}, "risks": [], "globals": {}}


_KIND_NAMES = {"c": "class", "r": "reconstructor", "f": "function", "k": "constant"}


def _from_catalogue(module: str, name: str) -> GlobalJudgement | None:
    data = catalogue()
    code = data["globals"].get(module, {}).get(name)
    if code is None:
        return None
    full = f"{module}.{name}"
    kind = _KIND_NAMES[code[0]]
    risk = data["risks"][int(code[1:])] if len(code) > 1 else None
    package = module.split(".")[0]
    where = f"{package} {data['versions'].get(package, '')}".strip()
    if risk and kind == "class":
        return GlobalJudgement(
            GlobalVerdict.ALLOW,
            full,
            f"a class of {where}; restored with __new__ and its state it builds data",
            escalate_on="init_call",
            escalated=(GlobalVerdict.DENY, f"calling its constructor {risk}"),
        )
    if risk:
        return GlobalJudgement(GlobalVerdict.DENY, full, f"a {kind} of {where} that {risk}")
    if kind != "class" and DANGEROUS_NAME.search(full.rsplit(".", 1)[-1]):
        return GlobalJudgement(
            GlobalVerdict.DENY, full, f"a {kind} of {where} whose name says it loads, opens or runs something"
        )
    if kind == "function":
        return GlobalJudgement(
            GlobalVerdict.DATA,
            full,
            f"a function of {where} referenced as a value (never called while loading)",
            escalate_on="any_call",
            escalated=(
                GlobalVerdict.UNKNOWN,
                f"calls a function of {where} while loading; only its reconstruction helpers are vouched for",
            ),
        )
    what = {"class": "a class", "reconstructor": "a reconstruction helper", "constant": "a constant"}[kind]
    return GlobalJudgement(GlobalVerdict.ALLOW, full, f"{what} of {where} (generated catalogue): builds data")


def _aliases(module: str, name: str) -> list[tuple[str, str]]:
    """The names as written plus the ones a protocol 0-2 unpickler maps them to (fix_imports)."""
    out = [(module, name)]
    mapped = _compat_pickle.NAME_MAPPING.get((module, name))
    if mapped is not None:
        out.append(mapped)
    elif module in _compat_pickle.IMPORT_MAPPING:
        out.append((_compat_pickle.IMPORT_MAPPING[module], name))
    # Python 3 names that a Python 2 reader would see differently do not matter: loaders run on 3.
    return out


def _module_prefixes(dotted: str) -> list[str]:
    parts = dotted.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def _judge_one(module: str, name: str, *, torchscript: bool) -> GlobalJudgement:
    full = f"{module}.{name}"
    traversed = name.split(".")[1:]  # attributes reached *through* the named object (protocol 4)
    if any(c.startswith("__") and c.endswith("__") for c in traversed) or any(
        c in _INTERNAL_DUNDERS for c in full.split(".")
    ):
        return GlobalJudgement(
            GlobalVerdict.DENY, full, "dunder attribute traversal reaches interpreter internals"
        )
    if full in DENY_GLOBALS:
        return GlobalJudgement(GlobalVerdict.DENY, full, DENY_GLOBALS[full])
    if full in ALLOW_GLOBALS:
        return GlobalJudgement(GlobalVerdict.ALLOW, full, ALLOW_GLOBALS[full])
    for prefix in _module_prefixes(full):
        if prefix in DENY_MODULES:
            return GlobalJudgement(GlobalVerdict.DENY, full, DENY_MODULES[prefix])
    if torchscript and (module == TORCHSCRIPT_PREFIX or module.startswith(TORCHSCRIPT_PREFIX + ".")):
        return GlobalJudgement(GlobalVerdict.ALLOW, full, "TorchScript class compiled from this archive")
    known = _from_catalogue(module, name)
    if known is not None:
        return known
    if DANGEROUS_NAME.search(name):
        return GlobalJudgement(
            GlobalVerdict.DENY, full, "its name says it loads, opens, fetches, spawns or evaluates something"
        )
    package = module.split(".")[0]
    if package in TRUSTED_PACKAGES and "." not in name and _CLASS_NAME.match(name):
        version = catalogue()["versions"].get(package, "not catalogued")
        return GlobalJudgement(
            GlobalVerdict.DATA,
            full,
            f"a class-shaped name of trusted package {package} that the generated catalogue "
            f"(built from {package} {version}) does not list: another version's class",
        )
    return GlobalJudgement(GlobalVerdict.UNKNOWN, full, "on neither the allowlist nor the denylist")


def normalise(module: str, name: str) -> tuple[str, str]:
    """Strip the whitespace and stray newlines loaders would choke on or that hide a name."""
    return module.strip(), name.strip()


def judge_global(module: str, name: str, *, torchscript: bool = False) -> GlobalJudgement:
    """Judge one imported global. Deny wins over every alias; then an allowed alias; else unknown."""
    module, name = normalise(module, name)
    judgements = [_judge_one(m, n, torchscript=torchscript) for m, n in _aliases(module, name)]
    for j in reversed(judgements):  # the name the loader really imports first, for the message
        if j.verdict is GlobalVerdict.DENY:
            return j
    # the loader imports the mapped name (protocol < 3) or fails to import the Python 2 one: either
    # way an allowed alias is what can run
    for wanted in (GlobalVerdict.ALLOW, GlobalVerdict.DATA):
        for j in reversed(judgements):
            if j.verdict is wanted:
                return j
    return judgements[0]
