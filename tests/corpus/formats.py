"""Samples for the non-pickle scanners, built in code: malicious by hand, benign with the real libraries.

Every malicious payload is harmless (`echo pwned`, `print`) and is never loaded: the scanners only read
bytes. Benign samples come from the libraries users actually run (keras, onnx, gguf, safetensors, h5py), so
the tests prove the scanners stay quiet on real files, not just on our idea of them.

Functions return the file's bytes; a few that need a directory (external data) take one.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

# A protocol-0 pickle that would run `os.system("echo pwned")` if anyone loaded it (nobody does).
EVIL_PICKLE = b"cos\nsystem\n(S'echo pwned'\ntR."

BENIGN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ '<|system|>\\n' + message['content'] + eos_token }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + eos_token }}"
    "{% else %}{{ '<|assistant|>\\n' + message['content'] | trim + eos_token }}{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
    "{% endfor %}"
)
SSTI_TEMPLATE = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
OBFUSCATED_TEMPLATES = {
    "concatenated attr": "{% set c = ''|attr('__cla' + 'ss__') %}{{ c }}",
    "joined list": "{{ ''|attr(['__cla', 'ss__']|join)|attr('__mro__') }}",
    "hex escapes": "{{ ''['\\x5f\\x5fclass\\x5f\\x5f'] }}",
    "repeated underscore": "{{ ''|attr('_' * 2 ~ 'class' ~ '_' * 2) }}",
    "reversed": "{{ ''|attr('__ssalc__'|reverse) }}",
    "cycler globals": "{{ cycler.__init__.__globals__.os.popen('echo pwned').read() }}",
    "lipsum os": "{{ lipsum['__glo' ~ 'bals__']['os'].popen('echo pwned') }}",
}


# -- protobuf writer (for hand-built ONNX / SavedModel bytes) --------------------------------------------
def pb_varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pb_int(number: int, value: int) -> bytes:
    return pb_varint(number << 3) + pb_varint(value)


def pb_bytes(number: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return pb_varint((number << 3) | 2) + pb_varint(len(data)) + data


# -- ONNX ----------------------------------------------------------------------------------------------
def _onnx_linear_graph(nodes: list[Any], extra_inits: Iterable[Any] = (), outputs: str = "Y") -> Any:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 2), dtype=np.float32), name="W")
    b = numpy_helper.from_array(np.zeros((2,), dtype=np.float32), name="B")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["X", "W"], ["XW"], name="matmul"),
            helper.make_node("Add", ["XW", "B"], ["logits"], name="add_bias"),
            *nodes,
        ],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info(outputs, TensorProto.FLOAT, [1, 2])],
        [w, b, *extra_inits],
    )
    return graph


def _onnx_bytes(graph: Any, *, opsets: Iterable[tuple[str, int]] = (("", 17),)) -> bytes:
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 8
    return model.SerializeToString()


@cache
def onnx_benign() -> bytes:
    """A small classifier made with onnx.helper: MatMul, Add, Relu."""
    from onnx import helper

    return _onnx_bytes(_onnx_linear_graph([helper.make_node("Relu", ["logits"], ["Y"], name="relu")]))


def onnx_benign_guard_and_mask() -> bytes:
    """Legit uses of comparisons: an activation `x > 0 ? x : 0` at the output, and an attention-style mask
    (Where on input == 0) far from the output. Neither is a trigger switch."""
    import numpy as np
    from onnx import helper, numpy_helper

    zero = numpy_helper.from_array(np.zeros((1,), dtype=np.float32), name="zero")
    neg = numpy_helper.from_array(np.full((1,), -1e9, dtype=np.float32), name="neg")
    w2 = numpy_helper.from_array(np.ones((2, 2), dtype=np.float32), name="W2")
    nodes = [
        helper.make_node("Equal", ["X", "zero"], ["is_pad"], name="mask_eq"),
        helper.make_node("Where", ["is_pad", "neg", "X"], ["masked"], name="mask_where"),
        helper.make_node("Softmax", ["masked"], ["probs"], name="softmax"),
        helper.make_node("MatMul", ["probs", "W"], ["h1"], name="mm1"),
        helper.make_node("Add", ["h1", "logits"], ["h2"], name="residual"),
        helper.make_node("MatMul", ["h2", "W2"], ["h3"], name="mm2"),
        helper.make_node("Relu", ["h3"], ["h4"], name="relu"),
        helper.make_node("MatMul", ["h4", "W2"], ["h5"], name="mm3"),
        helper.make_node("Greater", ["h5", "zero"], ["pos"], name="act_cmp"),
        helper.make_node("Where", ["pos", "h5", "zero"], ["Y"], name="act_where"),
    ]
    return _onnx_bytes(_onnx_linear_graph(nodes, [zero, neg, w2]))


def onnx_where_backdoor() -> bytes:
    """Where(ReduceMin(input == 1337) , fixed logits, real logits): the output flips on a trigger input."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    trigger = numpy_helper.from_array(np.full((1, 4), 1337.0, dtype=np.float32), name="trigger")
    target = numpy_helper.from_array(np.array([[0.0, 100.0]], dtype=np.float32), name="target_logits")
    nodes = [
        helper.make_node("Equal", ["X", "trigger"], ["hit"], name="trigger_eq"),
        helper.make_node("Cast", ["hit"], ["hit_f"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("ReduceMin", ["hit_f"], ["all_hit"], keepdims=1, name="all"),
        helper.make_node("Cast", ["all_hit"], ["armed"], to=TensorProto.BOOL, name="cast_back"),
        helper.make_node("Where", ["armed", "target_logits", "logits"], ["Y"], name="switch"),
    ]
    return _onnx_bytes(_onnx_linear_graph(nodes, [trigger, target]))


def onnx_if_backdoor() -> bytes:
    """If(input[0] > 0.999, then=constant, else=real logits) feeding the output."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    thr = numpy_helper.from_array(np.array(0.999, dtype=np.float32), name="thr")
    idx = numpy_helper.from_array(np.array([0], dtype=np.int64), name="idx0")
    const_out = helper.make_tensor("fixed", TensorProto.FLOAT, [1, 2], [0.0, 100.0])
    then_g = helper.make_graph(
        [helper.make_node("Constant", [], ["t_out"], value=const_out)],
        "then",
        [],
        [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [1, 2])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Identity", ["logits"], ["e_out"])],
        "else",
        [],
        [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [1, 2])],
    )
    nodes = [
        helper.make_node("Flatten", ["X"], ["flat"], name="flat"),
        helper.make_node("Gather", ["flat", "idx0"], ["first"], axis=1, name="pick"),
        helper.make_node("ReduceMax", ["first"], ["first_s"], keepdims=0, name="scalar"),
        helper.make_node("Greater", ["first_s", "thr"], ["cond"], name="cmp"),
        helper.make_node("If", ["cond"], ["Y"], then_branch=then_g, else_branch=else_g, name="switch"),
    ]
    return _onnx_bytes(_onnx_linear_graph(nodes, [thr, idx]))


def onnx_benign_ignore_index_loss() -> bytes:
    """A loss with ignore_index, as onnx expands NegativeLogLikelihoodLoss: `Where(target == ignore, 0, w)`
    zeroes the ignored terms, which are then summed. The mask drops terms; it cannot choose the result."""
    from onnx import TensorProto, helper

    ignore = helper.make_tensor("i", TensorProto.INT64, [1], [1])
    zero = helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0])
    nodes = [
        helper.make_node("Constant", [], ["ignore"], value=ignore),
        helper.make_node("Constant", [], ["zero"], value=zero),
        helper.make_node("Equal", ["target", "ignore"], ["mask"], name="ignored"),
        helper.make_node("Gather", ["weight", "target"], ["w_t"], name="class_weight"),
        helper.make_node("Where", ["mask", "zero", "w_t"], ["w_masked"], name="drop_ignored"),
        helper.make_node("Mul", ["w_masked", "score"], ["terms"], name="weighted"),
        helper.make_node("ReduceSum", ["terms"], ["num"], keepdims=0, name="sum_terms"),
        helper.make_node("ReduceSum", ["w_masked"], ["den"], keepdims=0, name="sum_weights"),
        helper.make_node("Div", ["num", "den"], ["loss"], name="mean"),
    ]
    graph = helper.make_graph(
        nodes,
        "masked_loss",
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, [3]),
            helper.make_tensor_value_info("target", TensorProto.INT64, [3]),
            helper.make_tensor_value_info("weight", TensorProto.FLOAT, [5]),
        ],
        [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])],
    )
    return _onnx_bytes(graph)


def onnx_rank_dispatch(dims: list[int | str]) -> bytes:
    """`If(Size(size) == 4, 2-D branch, 3-D branch)`, as onnx expands AffineGrid. With fixed declared
    dims the condition is a constant (the runtime rejects other shapes); with a symbolic dim the caller
    chooses the input's length, and a switch on it is a trigger like any other."""
    from onnx import TensorProto, helper

    four = helper.make_tensor("four", TensorProto.INT64, [], [4])
    fixed = helper.make_tensor("fixed", TensorProto.FLOAT, [2], [0.0, 100.0])

    def branch(name: str, node: Any) -> Any:
        return helper.make_graph([node], name, [], [helper.make_tensor_value_info(f"{name}_out", 1, [2])])

    then_g = branch("then", helper.make_node("Constant", [], ["then_out"], value=fixed))
    else_g = branch("else", helper.make_node("Identity", ["x"], ["else_out"]))
    nodes = [
        helper.make_node("Constant", [], ["k4"], value=four),
        helper.make_node("Size", ["size"], ["n"], name="rank"),
        helper.make_node("Equal", ["n", "k4"], ["is_2d"], name="is_2d"),
        helper.make_node("If", ["is_2d"], ["Y"], then_branch=then_g, else_branch=else_g, name="dispatch"),
    ]
    graph = helper.make_graph(
        nodes,
        "dispatch",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
            helper.make_tensor_value_info("size", TensorProto.INT64, dims),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2])],
    )
    return _onnx_bytes(graph)


def onnx_zero_fill_backdoor(*, fill: float = 0.0, reduce: bool = False) -> bytes:
    """`Where(input == trigger, fill, logits)`: a single-value fill at the output (all logits equal: the
    argmax falls to class 0), or, with `reduce`, a non-zero fill summed into the output."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    trigger = numpy_helper.from_array(np.full((1, 4), 1337.0, dtype=np.float32), name="trigger")
    value = numpy_helper.from_array(np.array([fill], dtype=np.float32), name="fill")
    out = "switched" if reduce else "Y"
    nodes = [
        helper.make_node("Equal", ["X", "trigger"], ["hit"], name="trigger_eq"),
        helper.make_node("Cast", ["hit"], ["hit_f"], to=TensorProto.FLOAT, name="cast"),
        helper.make_node("ReduceMin", ["hit_f"], ["all_hit"], keepdims=1, name="all"),
        helper.make_node("Cast", ["all_hit"], ["armed"], to=TensorProto.BOOL, name="cast_back"),
        helper.make_node("Where", ["armed", "fill", "logits"], [out], name="switch"),
    ]
    if reduce:
        nodes.append(helper.make_node("ReduceSum", ["switched"], ["Y"], keepdims=1, name="total"))
    return _onnx_bytes(_onnx_linear_graph(nodes, [trigger, value]))


def onnx_custom_domain(domain: str = "evil.ops") -> bytes:
    from onnx import helper

    node = helper.make_node("Backdoor", ["logits"], ["Y"], domain=domain, name="custom")
    return _onnx_bytes(_onnx_linear_graph([node]), opsets=(("", 17), (domain, 1)))


def onnx_external_data(location: str, *, offset: str | None = None, length: str | None = None) -> bytes:
    """An initializer whose bytes live in an external file at `location` (e.g. '../../etc/passwd')."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    ext = numpy_helper.from_array(np.zeros((4,), dtype=np.float32), name="ext")
    ext.ClearField("raw_data")
    ext.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            entry = ext.external_data.add()
            entry.key, entry.value = key, value
    relu = helper.make_node("Relu", ["logits"], ["Y"], name="relu")
    return _onnx_bytes(_onnx_linear_graph([relu], [ext]))


def onnx_benign_with_external_dir(directory: Path) -> Path:
    """A real model saved by onnx with its weights in `weights.bin` next to it (inside the directory)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    big = numpy_helper.from_array(np.ones((4, 2048), dtype=np.float32), name="W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2048])],
        [big],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = directory / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=0)
    return path


# -- GGUF ----------------------------------------------------------------------------------------------
def gguf_from_writer(template: str | None, *, license_: str | None = "apache-2.0") -> bytes:
    """A real GGUF (gguf-py's writer) with one f32 tensor and the given chat template."""
    import gguf
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.gguf"
        writer = gguf.GGUFWriter(str(path), "llama")
        writer.add_name("tiny")
        writer.add_author("Example Org")
        if license_:
            writer.add_license(license_)
        writer.add_context_length(128)
        if template is not None:
            writer.add_chat_template(template)
        writer.add_token_list(["<s>", "</s>", "hello"])
        writer.add_tensor("tok_embd.weight", np.ones((3, 8), dtype=np.float32))
        writer.add_tensor("q.weight", np.ones((64,), dtype=np.float16))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path.read_bytes()


def _gguf_str(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(raw)) + raw


def gguf_raw(
    kvs: list[tuple[str, int, bytes]],
    tensors: list[tuple[str, list[int], int, int]] = (),  # type: ignore[assignment]
    *,
    version: int = 3,
    tensor_count: int | None = None,
    kv_count: int | None = None,
    data: bytes = b"",
) -> bytes:
    """A GGUF built field by field: kvs are (key, value type, encoded value)."""
    out = bytearray(b"GGUF" + struct.pack("<I", version))
    out += struct.pack(
        "<QQ",
        len(tensors) if tensor_count is None else tensor_count,
        len(kvs) if kv_count is None else kv_count,
    )
    for key, vtype, value in kvs:
        out += _gguf_str(key) + struct.pack("<I", vtype) + value
    for name, dims, ggml_type, offset in tensors:
        out += _gguf_str(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ggml_type, offset)
    out += b"\x00" * (-len(out) % 32)
    return bytes(out) + data


def gguf_string_value(s: str | bytes) -> bytes:
    return _gguf_str(s)


# -- safetensors ---------------------------------------------------------------------------------------
def safetensors_benign() -> bytes:
    import numpy as np
    from safetensors.numpy import save

    return save(
        {"w": np.ones((2, 3), dtype=np.float32), "b": np.zeros((3,), dtype=np.int64)},
        metadata={"license": "mit", "format": "np"},
    )


def safetensors_raw(
    header: dict[str, Any] | bytes | str, data: bytes = b"", *, declared: int | None = None
) -> bytes:
    """A safetensors file from a header (dict -> JSON, or raw text) and data bytes."""
    if isinstance(header, dict):
        raw = json.dumps(header).encode()
    else:
        raw = header.encode() if isinstance(header, str) else header
    n = len(raw) if declared is None else declared
    return struct.pack("<Q", n) + raw + data


# -- Keras ---------------------------------------------------------------------------------------------
@cache
def keras_benign_files() -> tuple[bytes, bytes]:
    """(.keras bytes, legacy .h5 bytes) of a real Sequential Dense model saved by Keras 3."""
    import keras

    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, activation="relu"), keras.layers.Dense(2)]
    )
    model.compile(optimizer="adam", loss="mse")
    with tempfile.TemporaryDirectory() as tmp:
        k, h = Path(tmp) / "m.keras", Path(tmp) / "m.h5"
        model.save(k)
        model.save(h)
        return k.read_bytes(), h.read_bytes()


@cache
def keras_lambda_file() -> bytes:
    """A real .keras file with a Lambda layer (Keras marshals the lambda's bytecode into config.json)."""
    import keras

    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2, name="doubler"), keras.layers.Dense(2)]
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lambda.keras"
        model.save(path)
        return path.read_bytes()


def keras_zip(config: dict[str, Any], *, extra: dict[str, bytes] | None = None) -> bytes:
    """A .keras archive built by hand around a config.json."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(
            "metadata.json", json.dumps({"keras_version": "3.15.1", "date_saved": "2026-01-01@00:00:00"})
        )
        z.writestr("config.json", json.dumps(config))
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buf.getvalue()


def keras_layer(
    class_name: str, config: dict[str, Any], module: str = "keras.layers", **extra: Any
) -> dict[str, Any]:
    return {"module": module, "class_name": class_name, "config": config, "registered_name": None, **extra}


def keras_sequential(*layers: dict[str, Any]) -> dict[str, Any]:
    return keras_layer("Sequential", {"name": "seq", "layers": list(layers)}, module="keras")


def keras_dense(name: str = "dense", **config: Any) -> dict[str, Any]:
    return keras_layer("Dense", {"name": name, "units": 2, "activation": "relu", **config})


# -- what a loader reads from outside the file (issue 14, next attacks) ----------------------------------
def keras_lookup_vocabulary_path(path: str = "/etc/passwd") -> bytes:
    """A StringLookup whose vocabulary is a path: Keras reads that file when it builds the layer."""
    lookup = keras_layer("StringLookup", {"name": "lookup", "vocabulary": path, "output_mode": "int"})
    return keras_zip(keras_sequential(lookup, keras_dense()))


def keras_fetched_file(url: str = "https://attacker.example/vocab.txt") -> bytes:
    """A TextVectorization whose vocabulary is a URL (tf.io.gfile fetches gs:// / http(s) paths)."""
    layer = keras_layer("TextVectorization", {"name": "vectorize", "vocabulary": url, "max_tokens": 10})
    return keras_zip(keras_sequential(layer))


def hf_config_auto_map() -> bytes:
    """A Hugging Face config.json whose auto_map makes transformers import code shipped with the repo."""
    return json.dumps(
        {
            "architectures": ["EvilModel"],
            "model_type": "evil",
            "auto_map": {
                "AutoConfig": "configuration_evil.EvilConfig",
                "AutoModel": "modeling_evil.EvilModel",
            },
        }
    ).encode()


def remote_code_module() -> bytes:
    """modeling_evil.py: what trust_remote_code=True imports (harmless payload, never imported here)."""
    return b"import os\n\nclass EvilModel:\n    def __init__(self):\n        os.system('echo pwned')\n"


def model_repo_with_remote_code() -> bytes:
    """A model repository as a tar: weights, a config with auto_map, and the module it names."""
    return tar_of(
        {
            "repo/config.json": hf_config_auto_map(),
            "repo/modeling_evil.py": remote_code_module(),
            "repo/model.safetensors": safetensors_benign(),
        }
    )


def keras_safe_mode_escape() -> bytes:
    """A Dense layer whose activation is `builtins.exec` referenced as a function: runs on load."""
    evil = {"module": "builtins", "class_name": "function", "config": "exec", "registered_name": "function"}
    return keras_zip(keras_sequential(keras_dense("dense", activation=evil)))


def keras_nested_lambda() -> bytes:
    """A Lambda hidden inside a Functional model wrapped by TimeDistributed inside a Sequential."""
    lam = keras_layer(
        "Lambda",
        {
            "name": "hidden_lambda",
            "function": {"class_name": "__lambda__", "config": {"code": "4wEAAAA=", "defaults": None}},
        },
    )
    inner = keras_layer("Functional", {"name": "inner", "layers": [keras_dense("d0"), lam]}, module="keras")
    wrapped = keras_layer("TimeDistributed", {"name": "td", "layer": inner})
    return keras_zip(keras_sequential(keras_dense("d1"), wrapped))


def keras_custom_object() -> bytes:
    """A layer class from the user's own package: needs custom_objects, i.e. their code runs."""
    custom = keras_layer(
        "MyLayer", {"name": "mine"}, module="my_company.layers", registered_name="my_company>MyLayer"
    )
    return keras_zip(keras_sequential(keras_dense("d"), custom))


def keras_get_file_gadget() -> bytes:
    """keras.utils.get_file referenced as a function (downloads/overwrites files: CVE-2025-8747)."""
    gadget = {
        "module": "keras.utils",
        "class_name": "function",
        "config": "get_file",
        "registered_name": "function",
    }
    return keras_zip(keras_sequential(keras_dense("d", activation=gadget)))


def h5_with_attrs(attrs: dict[str, Any], *, libver: str | None = None, userblock: int = 0) -> bytes:
    """An HDF5 file written by h5py with the given root attributes."""
    import h5py
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.h5"
        kwargs: dict[str, Any] = {"libver": libver} if libver else {}
        if userblock:
            kwargs["userblock_size"] = userblock
        with h5py.File(path, "w", **kwargs) as f:
            for key, value in attrs.items():
                f.attrs[key] = value
            f.create_dataset("model_weights/dense/kernel", data=np.ones((4, 2), dtype=np.float32))
        return path.read_bytes()


def h5_keras_with(kind: str) -> bytes:
    """A Keras-style .h5 (model_config + weights) that also makes the HDF5 library read another file:
    an external link, external raw storage, a virtual dataset; or, benign, soft links and many groups;
    or links in dense storage (libver='latest', more than 8 links in a group)."""
    import h5py
    import numpy as np

    config = json.dumps({"class_name": "Sequential", "config": {"name": "s", "layers": []}})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.h5"
        libver = "latest" if kind in ("virtual-dataset", "dense-links") else None
        with h5py.File(path, "w", **({"libver": libver} if libver else {})) as f:
            f.attrs["model_config"] = config
            f.create_dataset("model_weights/dense/kernel", data=np.ones((4, 2), dtype=np.float32))
            if kind == "external-link":
                f["model_weights/dense"]["bias"] = h5py.ExternalLink("/mnt/shared/evil.h5", "/payload")
            elif kind == "external-storage":
                f.create_dataset(
                    "model_weights/dense/bias", shape=(4,), dtype="f4", external=[("/etc/shadow", 0, 16)]
                )
            elif kind == "virtual-dataset":
                layout = h5py.VirtualLayout(shape=(3,), dtype="f8")
                layout[:] = h5py.VirtualSource("/data/other.h5", "x", shape=(3,))
                f["model_weights"].create_virtual_dataset("virtual", layout)
            elif kind in ("soft-links", "dense-links"):
                for i in range(12):
                    f.create_dataset(f"model_weights/layer{i}/kernel", data=np.zeros(2, dtype=np.float32))
                f["alias"] = h5py.SoftLink("/model_weights/dense")
        return path.read_bytes()


def keras2_lambda_config() -> str:
    """A Keras 2 style model_config with a Lambda layer (function as marshalled bytecode)."""
    return json.dumps(
        {
            "class_name": "Sequential",
            "config": {
                "name": "sequential",
                "layers": [
                    {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 4], "name": "in"}},
                    {
                        "class_name": "Lambda",
                        "config": {
                            "name": "evil_lambda",
                            "function": ["4wEAAAAAAAAA", None, None],
                            "function_type": "lambda",
                            "module": "__main__",
                        },
                    },
                ],
            },
        }
    )


# -- archives ------------------------------------------------------------------------------------------
def zip_of(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as z:
        for name, data in members.items():
            z.writestr(zipfile.ZipInfo(name) if name.endswith("/") else name, data)
    return buf.getvalue()


def zip_traversal() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(zipfile.ZipInfo("../../evil.txt"), b"hello")
        z.writestr(zipfile.ZipInfo("/etc/cron.d/evil"), b"hello")
    return buf.getvalue()


def zip_symlink() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        info = zipfile.ZipInfo("link")
        info.create_system = 3
        info.external_attr = 0o120777 << 16
        z.writestr(info, b"/etc/passwd")
    return buf.getvalue()


def zip_duplicate_names() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            z.writestr("config.json", b'{"a": 1}')
            z.writestr("config.json", b'{"a": 2}')
    return buf.getvalue()


def zip_bomb(size: int = 20 * 1024 * 1024) -> bytes:
    """`size` zero bytes deflated into one member (~1000:1)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("zeros.bin", "w") as member:
            chunk = b"\x00" * (1 << 20)
            for _ in range(size // len(chunk)):
                member.write(chunk)
    return buf.getvalue()


def zip_overlapping() -> bytes:
    """Two central-directory entries that point at the same local header (an overlap bomb's trick)."""
    data = zip_of({"a.json": b'{"x": 1}'}, compression=zipfile.ZIP_STORED)
    eocd = data.rfind(b"PK\x05\x06")
    cd_size, cd_offset = struct.unpack("<II", data[eocd + 12 : eocd + 20])
    entry = data[cd_offset : cd_offset + cd_size]
    second = entry.replace(b"a.json", b"b.json")
    new_cd = entry + second
    new_eocd = bytearray(data[eocd : eocd + 22])
    struct.pack_into("<HHII", new_eocd, 8, 2, 2, len(new_cd), cd_offset)
    return data[:cd_offset] + new_cd + bytes(new_eocd)


def zip_name_mismatch() -> bytes:
    """The local header says 'evil.pkl' while the central directory says 'safe.txt' (same length)."""
    data = bytearray(zip_of({"safe.txt": b"hello"}, compression=zipfile.ZIP_STORED))
    first = data.find(b"safe.txt")  # the local header's copy comes first
    data[first : first + 8] = b"evil.pkl"
    return bytes(data)


def zip_without_central_directory() -> bytes:
    """A zip cut before its central directory: only local headers remain (streaming unzippers read it)."""
    data = zip_of({"a.txt": b"hello", "evil.pkl": EVIL_PICKLE}, compression=zipfile.ZIP_STORED)
    return data[: data.find(b"PK\x01\x02")]


def zip_with_prefix(prefix: bytes = EVIL_PICKLE) -> bytes:
    """Bytes (here a malicious pickle) prepended to a valid zip: a polyglot."""
    return prefix + zip_of({"readme.txt": b"hello"})


def nested_zip(depth: int, inner: bytes = b'{"ok": true}') -> bytes:
    data, name = inner, "leaf.json"
    for level in range(depth):
        data, name = zip_of({name: data}), f"level{level}.zip"
    return data


def tar_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tar_unsafe() -> bytes:
    """A symlink to /etc/passwd, a hard link, an absolute path and a device node."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        link = tarfile.TarInfo("weights.bin")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        t.addfile(link)
        hard = tarfile.TarInfo("hard")
        hard.type, hard.linkname = tarfile.LNKTYPE, "../../outside"
        t.addfile(hard)
        absolute = tarfile.TarInfo("/tmp/abs.txt")
        absolute.size = 5
        t.addfile(absolute, io.BytesIO(b"hello"))
        dev = tarfile.TarInfo("dev")
        dev.type = tarfile.CHRTYPE
        t.addfile(dev)
    return buf.getvalue()


def v7_tar(members: dict[str, bytes]) -> bytes:
    """An old-style (pre-POSIX) tar: no 'ustar' magic, only the header checksum identifies it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    raw = bytearray(buf.getvalue())
    pos = 0
    while pos + 512 <= len(raw) and raw[pos : pos + 512].strip(b"\x00"):
        header = raw[pos : pos + 512]
        header[257:265] = b"\x00" * 8  # drop magic and version
        header[148:156] = b" " * 8
        header[148:156] = b"%06o\x00 " % sum(header)
        raw[pos : pos + 512] = header
        size = int(header[124:136].split(b"\x00")[0].strip() or b"0", 8)
        pos += 512 + (size + 511) // 512 * 512
    return bytes(raw)


def compressed(kind: str, data: bytes) -> bytes:
    if kind == "gzip":
        return gzip.compress(data)
    if kind == "bz2":
        return bz2.compress(data)
    if kind == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ)
    if kind == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_ALONE)
    if kind == "zlib":
        return zlib.compress(data)
    raise ValueError(kind)


# -- SavedModel ----------------------------------------------------------------------------------------
def tf_node(
    name: str, op: str, inputs: Iterable[str] = (), *, attrs: dict[str, bytes] | None = None
) -> bytes:
    """NodeDef: name (1), op (2), input (3), attr map (5) with string values (AttrValue.s = 2)."""
    body = pb_bytes(1, name) + pb_bytes(2, op) + b"".join(pb_bytes(3, i) for i in inputs)
    for key, value in (attrs or {}).items():
        body += pb_bytes(5, pb_bytes(1, key) + pb_bytes(2, pb_bytes(2, value)))
    return body


def saved_model(
    nodes: Iterable[bytes],
    *,
    functions: Iterable[tuple[str, list[str], list[bytes]]] = (),
    saver_filename: str | None = None,
    assets: Iterable[str] = (),
) -> bytes:
    """SavedModel: schema version (1) + MetaGraphDef (2) {meta_info (1), graph (2), saver (3), assets (6)}."""
    library = b""
    for fname, args, fnodes in functions:
        signature = pb_bytes(1, fname) + b"".join(pb_bytes(2, pb_bytes(1, a)) for a in args)
        library += pb_bytes(1, pb_bytes(1, signature) + b"".join(pb_bytes(3, n) for n in fnodes))
    graph = b"".join(pb_bytes(1, n) for n in nodes) + (pb_bytes(2, library) if library else b"")
    meta = pb_bytes(1, pb_bytes(4, "serve") + pb_bytes(5, "2.16.1")) + pb_bytes(2, graph)
    if saver_filename:
        meta += pb_bytes(3, pb_bytes(1, saver_filename))
    for asset in assets:
        meta += pb_bytes(6, pb_bytes(2, asset))
    return pb_int(1, 1) + pb_bytes(2, meta)


def saved_model_benign() -> bytes:
    """A TF2-style SavedModel: a MatMul graph and a traced save function fed by its file_prefix argument."""
    graph = [
        tf_node("x", "Placeholder"),
        tf_node("w", "Const"),
        tf_node("y", "MatMul", ["x", "w"]),
        tf_node("saver_filename", "Placeholder"),
        tf_node("StatefulPartitionedCall", "StatefulPartitionedCall", ["saver_filename"]),
    ]
    save_fn = [
        tf_node("Const", "Const"),
        tf_node("StringJoin", "StringJoin", ["file_prefix", "Const:output:0"]),
        tf_node("num_shards", "Const"),
        tf_node("ShardedFilename", "ShardedFilename", ["StringJoin:output:0", "num_shards:output:0"]),
        tf_node("SaveV2", "SaveV2", ["ShardedFilename:filename:0", "tensor_names", "slices", "w"]),
        tf_node("MergeV2Checkpoints", "MergeV2Checkpoints", ["ShardedFilename:filename:0", "file_prefix"]),
    ]
    return saved_model(graph, functions=[("__inference__traced_save_42", ["file_prefix"], save_fn)])


def saved_model_pyfunc() -> bytes:
    return saved_model(
        [tf_node("x", "Placeholder"), tf_node("evil", "PyFunc", ["x"], attrs={"token": b"pyfunc_0"})]
    )


def saved_model_fixed_path_write() -> bytes:
    """SaveV2 whose prefix is a constant '/tmp/owned': writes outside the model on every save."""
    return saved_model(
        [
            tf_node("prefix", "Const"),
            tf_node("joined", "StringJoin", ["prefix", "prefix"]),
            tf_node("save", "SaveV2", ["joined", "names", "slices", "w"]),
        ]
    )


# -- text ----------------------------------------------------------------------------------------------
def model_card(license_: str = "apache-2.0") -> bytes:
    return f"---\nlicense: {license_}\ntags:\n- text-generation\n---\n# Tiny model\n\nHello.\n".encode()


def tokenizer_config(template: str) -> bytes:
    return json.dumps({"bos_token": "<s>", "chat_template": template, "model_max_length": 2048}).encode()


def benign_archive_members() -> dict[str, bytes]:
    """What a benign model archive holds: recognised formats only (text + safetensors)."""
    return {
        "model/README.md": model_card(),
        "model/config.json": json.dumps({"architectures": ["Tiny"], "hidden_size": 8}).encode(),
        "model/tokenizer_config.json": tokenizer_config(BENIGN_CHAT_TEMPLATE),
        "model/model.safetensors": safetensors_benign(),
    }


# -- scanning helpers shared by the format tests ----------------------------------------------------------
def scan_bytes(data: bytes, name: str = "sample", **limits: Any) -> Any:
    """Scan `data` as a file called `name`, with any Limits fields overridden."""
    from modelshield.scanning import Limits, scan_stream

    return scan_stream(io.BytesIO(data), name, limits=Limits(**limits))


def rules_of(report: Any) -> set[Any]:
    return {f.rule for f in report.findings}


def findings_of(report: Any, rule: Any) -> list[Any]:
    return [f for f in report.findings if f.rule == rule]


def problem_rules() -> frozenset[Any]:
    """Rules a benign sample must never raise."""
    from modelshield.models import RuleId

    return frozenset(
        {
            RuleId.CODE_EXEC,
            RuleId.CODE_UNKNOWN,
            RuleId.MALFORMED,
            RuleId.ARCHIVE_UNSAFE,
            RuleId.BACKDOOR,
            RuleId.SCAN_INCOMPLETE,
        }
    )


# -- fuzzing seeds ---------------------------------------------------------------------------------------
@cache
def fuzz_seeds() -> dict[str, bytes]:
    """Small valid samples of every format, the starting points for mutation."""
    return {
        "zip": zip_of({"a.json": b'{"x": 1}', "t.safetensors": safetensors_benign()}),
        "tar": tar_of({"a.json": b'{"x": 1}', "README.md": model_card()}),
        "gzip": compressed("gzip", safetensors_benign()),
        "xz": compressed("xz", b'{"x": 1}'),
        "keras": keras_zip(keras_sequential(keras_dense())),
        "h5": h5_with_attrs({"model_config": json.dumps(keras_sequential(keras_dense()))}),
        "onnx": onnx_where_backdoor(),
        "savedmodel": saved_model_benign(),
        "gguf": gguf_raw(
            [("tokenizer.chat_template", 8, gguf_string_value(BENIGN_CHAT_TEMPLATE))],
            [("w", [8], 0, 0)],
            data=b"\x00" * 32,
        ),
        "safetensors": safetensors_benign(),
        "text": tokenizer_config(BENIGN_CHAT_TEMPLATE),
    }


def crash_prefixes() -> tuple[str, ...]:
    """How dispatch reports a crash of one of these scanners ("<format> scanner failed: ...")."""
    from modelshield.models import Format

    own = (Format.ZIP, Format.TAR, Format.COMPRESSED, Format.KERAS, Format.KERAS_H5, Format.ONNX)
    own += (Format.TF_SAVEDMODEL, Format.GGUF, Format.SAFETENSORS, Format.TEXT)
    return tuple(f"{f.value} scanner failed" for f in own)
