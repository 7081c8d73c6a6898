"""A benign corpus generated from the ML libraries' own catalogues, not picked by hand.

Each family walks what a library says it contains (scikit-learn's `all_estimators()`, `torch.nn`'s
`__all__`, `keras.layers`, the ONNX models the `onnx` wheel ships and its operator test cases, every
pandas / NumPy dtype, each save format of XGBoost / LightGBM / CatBoost) and writes what a user of that
library would upload. Whatever cannot be built with defaults (or the few generic arguments below) is
skipped and counted, never silently dropped: the counts are part of the result.

    .venv/bin/python tests/corpus/benign_catalog.py DEST [--size ci|full]   # writes DEST/, prints counts

`size="ci"` is the subset `make test` scans (every catalogue entry at least once, the save variants
spread over them); `size="full"` is every entry in every variant, for `make bench`. Nothing here loads a
scanned file: the libraries only *write*.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import inspect
import io
import json
import logging
import os
import pickle
import posixpath
import tarfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

os.environ.setdefault("KERAS_BACKEND", "torch")

Size = Literal["ci", "full"]
LIBRARIES = (
    "scikit-learn", "joblib", "numpy", "scipy", "pandas", "torch", "keras", "onnx", "gguf",
    "safetensors", "tokenizers", "xgboost-cpu", "lightgbm", "catboost", "py7zr",
)  # fmt: skip


@dataclass(frozen=True)
class Item:
    path: Path  # relative to the corpus root
    family: str
    how: str  # the library call that wrote it


@dataclass
class Catalog:
    root: Path
    size: Size
    items: list[Item] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # family, entry, reason
    versions: dict[str, str] = field(default_factory=dict)

    def add(self, family: str, rel: str, how: str) -> Path:
        path = self.root / family / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        self.items.append(Item(path.relative_to(self.root), family, how))
        return path

    def write(self, family: str, rel: str, data: bytes, how: str) -> Path:
        path = self.add(family, rel, how)
        path.write_bytes(data)
        return path

    def skip(self, family: str, entry: str, exc: BaseException | str) -> None:
        reason = exc if isinstance(exc, str) else f"{type(exc).__name__}: {str(exc)[:160]}"
        self.skipped.append((family, entry, reason.splitlines()[0] if reason else ""))

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for item in self.items:
            out.setdefault(item.family, {"files": 0, "skipped": 0})["files"] += 1
        for family, _, _ in self.skipped:
            out.setdefault(family, {"files": 0, "skipped": 0})["skipped"] += 1
        return out


def _spread(index: int, variants: list[Any], size: Size) -> list[Any]:
    """Full: every variant. CI: one variant per entry, rotating, so each variant is still covered."""
    return variants if size == "full" else [variants[index % len(variants)]]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The libraries warn about toy data (convergence, tiny sets); the corpus does not care."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# -- scikit-learn -------------------------------------------------------------------------------------
def _toy_inputs() -> list[tuple[str, tuple[Any, ...]]]:
    """The argument shapes estimators accept, tried in order until `fit` succeeds."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = np.abs(rng.random((40, 4))) + 0.01
    y_class = np.array([0, 1] * 20)
    y_reg = rng.random(40)
    texts = ["the cat sat", "a dog ran", "the dog sat", "a cat ran"] * 5
    return [
        ("X, y (classes)", (x, y_class)),
        ("X, y (continuous)", (x, y_reg)),
        ("X", (x,)),
        ("X, Y (two outputs)", (x, np.c_[y_reg, y_reg[::-1]])),
        ("X, Y (two label columns)", (x, np.c_[y_class, y_class[::-1]])),
        ("texts", (texts,)),
        ("dicts", ([{"a": 1.0, "b": 2.0}, {"a": 3.0, "c": 1.0}] * 5,)),
        ("labels", (y_class,)),
        ("label sets", ([[0, 1], [1], [0, 2]] * 5,)),
        ("one feature, y", (x[:, :1], y_reg)),
        ("square kernel", (x @ x.T,)),
    ]


def sklearn_fitted(cat: Catalog) -> Iterator[tuple[str, Any]]:
    """Every estimator all_estimators() lists, built by scikit-learn's own test instance generator."""
    from sklearn.utils import all_estimators
    from sklearn.utils._test_common.instance_generator import _construct_instances

    inputs = _toy_inputs()
    for name, cls in all_estimators():
        try:
            estimator = next(iter(_construct_instances(cls)))
        except BaseException as exc:  # SkipTest derives from Exception; be broad, count it
            cat.skip("sklearn", name, f"cannot construct: {exc}")
            continue
        for _label, args in inputs:
            try:
                with _quiet():
                    estimator.fit(*args)
                break
            except Exception:
                continue
        else:
            cat.skip("sklearn", name, "no toy input shape fits with default parameters")
            continue
        yield name, estimator


def build_sklearn(cat: Catalog) -> None:
    import joblib
    from joblib.compressor import _COMPRESSORS

    compressors = []
    for name in _COMPRESSORS:
        try:
            joblib.dump([1], io.BytesIO(), compress=(name, 3))
            compressors.append(name)
        except Exception as exc:
            cat.skip("sklearn", f"joblib compressor {name}", exc)
    variants: list[tuple[str, Any]] = [("pickle", p) for p in ((5,) if cat.size == "ci" else (2, 3, 4, 5))]
    variants += [("joblib", None)] + [("joblib", c) for c in compressors]
    for i, (name, estimator) in enumerate(sklearn_fitted(cat)):
        chosen = [("pickle", 5), *_spread(i, variants[1:], cat.size)] if cat.size == "ci" else variants
        for kind, arg in chosen:
            if kind == "pickle":
                cat.write("sklearn", f"{name}.p{arg}.pkl", pickle.dumps(estimator, protocol=arg),
                          f"pickle.dumps({name}(), protocol={arg})")  # fmt: skip
            else:
                suffix = f".{arg}" if arg else ""
                path = cat.add(
                    "sklearn", f"{name}.joblib{suffix}", f"joblib.dump({name}(), compress={arg!r})"
                )
                joblib.dump(estimator, path, compress=(arg, 3) if arg else 0)


# -- XGBoost / LightGBM / CatBoost ------------------------------------------------------------------
def _gbm_data() -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(1)
    x = rng.random((80, 5))
    return x, (x[:, 0] + x[:, 1] > 1).astype(int)


def build_gbm(cat: Catalog) -> None:
    import joblib

    x, y = _gbm_data()
    try:
        import xgboost as xgb

        for est in (xgb.XGBClassifier(n_estimators=3, max_depth=2), xgb.XGBRegressor(n_estimators=3)):
            est.fit(x, y)
            name = type(est).__name__
            for ext in ("json", "ubj"):
                path = cat.add("gbm", f"xgboost_{name}.{ext}", f"{name}.save_model('.{ext}')")
                est.save_model(path)
            cat.write("gbm", f"xgboost_{name}.pkl", pickle.dumps(est), f"pickle.dumps({name})")
            joblib.dump(est, cat.add("gbm", f"xgboost_{name}.joblib", f"joblib.dump({name})"))
        booster = xgb.train({"max_depth": 2}, xgb.DMatrix(x, label=y), num_boost_round=3)
        for raw in ("json", "ubj"):
            cat.write("gbm", f"xgboost_booster_raw.{raw}", bytes(booster.save_raw(raw)), f"save_raw('{raw}')")
        cat.write("gbm", "xgboost_booster.pkl", pickle.dumps(booster), "pickle.dumps(Booster)")
    except Exception as exc:
        cat.skip("gbm", "xgboost", exc)
    try:
        import lightgbm as lgb

        clf = lgb.LGBMClassifier(n_estimators=3, num_leaves=4, verbose=-1).fit(x, y)
        booster = clf.booster_
        booster.save_model(cat.add("gbm", "lightgbm_model.txt", "Booster.save_model (text)"))
        cat.write("gbm", "lightgbm_model_string.txt", booster.model_to_string().encode(), "model_to_string")
        cat.write("gbm", "lightgbm_dump.json", json.dumps(booster.dump_model()).encode(), "dump_model (JSON)")
        cat.write("gbm", "lightgbm_classifier.pkl", pickle.dumps(clf), "pickle.dumps(LGBMClassifier)")
        cat.write("gbm", "lightgbm_booster.pkl", pickle.dumps(booster), "pickle.dumps(Booster)")
        joblib.dump(clf, cat.add("gbm", "lightgbm_classifier.joblib", "joblib.dump(LGBMClassifier)"))
    except Exception as exc:
        cat.skip("gbm", "lightgbm", exc)
    try:
        import catboost

        model = catboost.CatBoostClassifier(
            iterations=3, depth=2, verbose=False, allow_writing_files=False
        ).fit(x, y)
        cat.write("gbm", "catboost_classifier.pkl", pickle.dumps(model), "pickle.dumps(CatBoostClassifier)")
        joblib.dump(model, cat.add("gbm", "catboost_classifier.joblib", "joblib.dump(CatBoostClassifier)"))
        for fmt in ("json", "onnx"):
            model.save_model(
                str(cat.add("gbm", f"catboost.{fmt}", f"save_model(format='{fmt}')")), format=fmt
            )
        for fmt in ("cbm", "coreml", "pmml", "cpp", "python"):
            cat.skip("gbm", f"catboost {fmt}", "format not covered by ModelShield (cbm/coreml/pmml) or "
                     "source code rather than a model (cpp/python)")  # fmt: skip
    except Exception as exc:
        cat.skip("gbm", "catboost", exc)


# -- pandas ------------------------------------------------------------------------------------------
def pandas_frames() -> dict[str, Any]:
    """One frame per dtype family pandas documents (numpy, nullable extension, datetime-like, ...)."""
    import numpy as np
    import pandas as pd

    n = 6
    idx = pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC")
    columns: dict[str, Any] = {
        **{
            f"np_{t}": np.arange(n).astype(t)
            for t in (
                "int8",
                "int16",
                "int32",
                "int64",
                "uint8",
                "uint16",
                "uint32",
                "uint64",
                "float16",
                "float32",
                "float64",
                "complex64",
                "complex128",
                "bool",
            )
        },
        **{
            f"ext_{t}": pd.array([1, None, 3, 4, 5, 6], dtype=t)
            for t in (
                "Int8",
                "Int16",
                "Int32",
                "Int64",
                "UInt8",
                "UInt16",
                "UInt32",
                "UInt64",
                "Float32",
                "Float64",
            )
        },
        "ext_boolean": pd.array([True, None, False, True, False, True], dtype="boolean"),
        "object": np.array(["a", "b", None, "d", "e", "f"], dtype=object),
        "string_python": pd.array(list("abcdef"), dtype=pd.StringDtype("python")),
        "category": pd.Categorical(list("xyzxyz")),
        "ordered_category": pd.Categorical(list("lmhlmh"), categories=list("lmh"), ordered=True),
        "datetime_naive": pd.date_range("2024-01-01", periods=n, freq="h"),
        "datetime_tz": idx,
        "timedelta": pd.to_timedelta(np.arange(n), unit="s"),
        "period": pd.period_range("2024-01", periods=n, freq="M"),
        "interval": pd.interval_range(0, n),
        "sparse": pd.arrays.SparseArray([0, 0, 1, 0, 2, 0]),
    }
    frames = {f"frame_{k}": pd.DataFrame({k: v}) for k, v in columns.items()}
    frames["frame_all_dtypes"] = pd.DataFrame(columns)
    frames["series_datetime"] = pd.Series(idx, name="when")
    frames["frame_multiindex"] = pd.DataFrame(
        {"v": range(4)}, index=pd.MultiIndex.from_product([["a", "b"], [1, 2]], names=["k", "n"])
    )
    frames["frame_range_index"] = pd.DataFrame({"v": np.arange(3.0)}, index=pd.RangeIndex(3))
    frames["frame_categorical_index"] = pd.DataFrame({"v": [1, 2]}, index=pd.CategoricalIndex(["p", "q"]))
    return frames


def build_pandas(cat: Catalog) -> None:
    import pandas as pd

    compressions = [None, "gzip", "bz2", "xz", "zip", "tar"]
    try:
        pd.DataFrame().to_pickle(io.BytesIO(), compression="zstd")
        compressions.append("zstd")
    except Exception as exc:
        cat.skip("pandas", "to_pickle(compression='zstd')", exc)
    for i, (name, frame) in enumerate(pandas_frames().items()):
        protocols = [5] if cat.size == "ci" else [2, 4, 5]
        for protocol in protocols:
            cat.write("pandas", f"{name}.p{protocol}.pkl", pickle.dumps(frame, protocol=protocol),
                      f"pickle.dumps(DataFrame, protocol={protocol})")  # fmt: skip
        for comp in _spread(i, compressions[1:], cat.size):
            path = cat.add("pandas", f"{name}.pkl.{comp}", f"DataFrame.to_pickle(compression='{comp}')")
            frame.to_pickle(path, compression=comp)


# -- torch -------------------------------------------------------------------------------------------
# Generic values for the constructor arguments torch.nn modules require (by parameter name).
TORCH_ARGS: dict[str, Any] = {
    "in_features": 4, "out_features": 4, "in1_features": 4, "in2_features": 4, "in_channels": 2,
    "out_channels": 2, "kernel_size": 3, "num_features": 4, "normalized_shape": 4, "embed_dim": 4,
    "num_heads": 2, "d_model": 8, "nhead": 2, "input_size": 4, "hidden_size": 4, "num_embeddings": 10,
    "embedding_dim": 4, "size": 4, "num_groups": 2, "num_channels": 4, "dim": 1, "upscale_factor": 2,
    "downscale_factor": 2, "output_size": 2, "padding": 1, "lambd": 0.5, "beta": 1.0, "threshold": 0.1,
    "value": 0.0, "scale_factor": 2, "dims": (0,), "cutoffs": [2], "n_classes": 4, "encoder_layer": None,
    "decoder_layer": None, "num_layers": 1, "groups": 1, "unflattened_size": (2, 2), "p": 0.5,
    "stride": 1, "modules": None, "shifts": 1, "norm_type": 2.0, "num_classes": 4, "mode": "LSTM",
    "bias": True,
}  # fmt: skip
TORCH_OPTIONAL: dict[str, Any] = {"output_ratio": 0.5, "num_chunks": 1}


def _torch_instance(cls: type) -> Any:
    """cls(required arguments by name); if the class still refuses, also the optional ones we know."""
    import torch

    def value(pname: str) -> Any:
        if pname == "encoder_layer":
            return torch.nn.TransformerEncoderLayer(8, 2, dim_feedforward=8)
        if pname == "decoder_layer":
            return torch.nn.TransformerDecoderLayer(8, 2, dim_feedforward=8)
        return TORCH_ARGS[pname]

    params = inspect.signature(cls).parameters
    required = [p for p, v in params.items()
                if v.default is inspect.Parameter.empty
                and v.kind not in (v.VAR_POSITIONAL, v.VAR_KEYWORD)]  # fmt: skip
    missing = [p for p in required if p not in TORCH_ARGS]
    if missing:
        raise TypeError(f"no generic value for required argument {missing[0]!r}")
    try:
        return cls(**{p: value(p) for p in required})
    except (TypeError, ValueError):
        known = [p for p in params if p in TORCH_ARGS]
        if any(v.kind is v.VAR_POSITIONAL for v in params.values()):  # RNN/LSTM/GRU take *args
            known += ["input_size", "hidden_size"]
        known += [p for p in TORCH_OPTIONAL if p in params]
        return cls(**{p: TORCH_OPTIONAL.get(p) or value(p) for p in dict.fromkeys(known)})


def torch_modules(cat: Catalog) -> Iterator[tuple[str, Any]]:
    import torch

    for name in sorted(torch.nn.modules.__all__):
        cls = getattr(torch.nn, name, None)
        if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
            continue
        try:
            with _quiet():
                yield name, _torch_instance(cls)
        except Exception as exc:
            cat.skip("torch", name, exc)


def _initialised_lazy(module: Any) -> Any:
    """The module after the first forward pass a lazy module needs before anyone saves it, or None."""
    import torch

    for shape in ((2, 4), (2, 2, 8), (2, 2, 8, 8), (2, 2, 4, 4, 4)):
        attempt = _torch_instance(type(module))  # a failed pass can leave a half-initialised module
        try:
            with _quiet():
                attempt(torch.zeros(shape))
            return attempt
        except Exception:
            continue
    return None


def build_torch(cat: Catalog) -> None:
    import torch

    quantizable = {torch.nn.Linear, torch.nn.LSTM, torch.nn.GRU, torch.nn.RNNCell, torch.nn.LSTMCell,
                   torch.nn.GRUCell}  # fmt: skip
    for i, (name, module) in enumerate(torch_modules(cat)):
        if isinstance(module, torch.nn.modules.lazy.LazyModuleMixin):
            # an uninitialised lazy module pickles its hooks through builtins.getattr (denied: it can
            # reach any attribute); nobody uploads one before its first forward pass, which we run here
            module = _initialised_lazy(module)
            if module is None:
                cat.skip("torch", name, "lazy module that no toy input initialises")
                continue
        torch.save(module, cat.add("torch", f"{name}.whole.pt", f"torch.save(nn.{name}(...))"))
        torch.save(module.state_dict(), cat.add("torch", f"{name}.state_dict.pt", "torch.save(state_dict)"))
        if cat.size == "full" or i % 3 == 0:
            buf = io.BytesIO()
            try:
                with _quiet():
                    torch.jit.save(torch.jit.script(module), buf)
            except Exception as exc:
                cat.skip("torch", f"{name} (TorchScript)", exc)
            else:
                cat.write(
                    "torch", f"{name}.torchscript.pt", buf.getvalue(), "torch.jit.script + torch.jit.save"
                )
        if type(module) in quantizable:
            with _quiet():
                q = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(module), set(quantizable))
            torch.save(q, cat.add("torch", f"{name}.quantized.whole.pt", "quantize_dynamic + torch.save"))
            torch.save(q.state_dict(), cat.add("torch", f"{name}.quantized.state_dict.pt",
                                               "quantize_dynamic + torch.save(state_dict)"))  # fmt: skip
    torch.save(torch.optim.Adam(torch.nn.Linear(2, 2).parameters()).state_dict(),
               cat.add("torch", "adam_state.pt", "torch.save(optimizer.state_dict())"))  # fmt: skip


# -- Keras -------------------------------------------------------------------------------------------
KERAS_ARGS: dict[str, Any] = {
    "units": 4, "filters": 2, "kernel_size": 2, "rate": 0.5, "input_dim": 10, "output_dim": 4,
    "num_heads": 2, "key_dim": 2, "pool_size": 2, "size": 2, "cropping": 1, "padding": 1,
    "target_shape": (-1,),
    "dims": (1,), "n": 2, "axis": -1, "factor": 0.1, "height": 4, "width": 4, "height_factor": 0.1,
    "width_factor": 0.1, "max_tokens": 10, "num_tokens": 4, "num_bins": 4, "stddev": 0.1, "function": None,
    "activation": "relu", "l1": 0.01, "mean": 0.0, "variance": 1.0, "scale": 1.0, "offset": 0.0,
    "output_mode": "int", "vocabulary": ["a", "b", "c"], "bin_boundaries": [0.5], "depth_multiplier": 1,
    "groups": 2, "data_format": None, "num_classes": 3, "value_range": (0, 1),
}  # fmt: skip
KERAS_SHAPES = [(8,), (6, 4), (8, 8, 3), (4, 4, 4, 2)]


def keras_models(cat: Catalog) -> Iterator[tuple[str, Any]]:
    import keras

    skip_names = {"Lambda", "TFSMLayer", "Layer", "InputLayer", "Input", "InputSpec", "Wrapper", "RNN",
                  "Bidirectional", "TimeDistributed", "Pipeline"}  # fmt: skip
    for name in sorted(n for n in dir(keras.layers) if n[:1].isupper()):
        cls = getattr(keras.layers, name)
        if not (isinstance(cls, type) and issubclass(cls, keras.layers.Layer)):
            continue
        if name in skip_names:
            cat.skip("keras", name, "needs a user function or another layer (not a standard layer by itself)")
            continue
        try:
            kwargs = {p: KERAS_ARGS[p] for p, v in inspect.signature(cls).parameters.items()
                      if v.default is inspect.Parameter.empty
                      and v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)}  # fmt: skip
        except KeyError as exc:
            cat.skip("keras", name, f"no generic value for required argument {exc}")
            continue
        for shape in KERAS_SHAPES:
            try:
                with _quiet():
                    model = keras.Sequential([keras.Input(shape), cls(**kwargs)])
                yield name, model
                break
            except Exception:
                continue
        else:
            cat.skip("keras", name, "no toy input shape builds a model")
    yield "Dense_stack", keras.Sequential([keras.Input((8,)), keras.layers.Dense(4), keras.layers.Dense(2)])


def build_keras(cat: Catalog) -> None:
    for i, (name, model) in enumerate(keras_models(cat)):
        with _quiet():
            model.save(cat.add("keras", f"{name}.keras", "model.save('.keras')"))
            if cat.size == "full" or i % 4 == 0:
                h5 = cat.root / "keras" / f"{name}.h5"
                try:
                    model.save(h5)
                except Exception as exc:
                    h5.unlink(missing_ok=True)
                    cat.skip("keras", f"{name} (.h5)", exc)
                else:
                    cat.add("keras", f"{name}.h5", "model.save('.h5')")
                model.save_weights(cat.add("keras", f"{name}.weights.h5", "model.save_weights"))


# -- ONNX --------------------------------------------------------------------------------------------
def build_onnx(cat: Catalog) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shipped = Path(onnx.__file__).parent / "backend" / "test" / "data"
    for model in sorted(shipped.rglob("*.onnx")):
        rel = model.relative_to(shipped)
        cat.write("onnx", f"shipped/{rel}", model.read_bytes(), "shipped in the onnx wheel")
    if cat.size == "full":
        with _quiet():
            from onnx.backend.test.case.node import collect_testcases

            for case in collect_testcases(None):
                cat.write("onnx", f"node/{case.name}.onnx", case.model.SerializeToString(),
                          "onnx.backend.test.case.node")  # fmt: skip
    weights = numpy_helper.from_array(np.arange(64 * 64, dtype=np.float32).reshape(64, 64), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["H"]), helper.make_node("Relu", ["H"], ["Y"])], "mlp",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 64])], [weights],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    cat.write("onnx", "helper_mlp.onnx", model.SerializeToString(), "onnx.helper")
    ext_dir = cat.root / "onnx" / "external"
    ext_dir.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(ext_dir / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)  # fmt: skip
    # model.onnx.data is raw tensor bytes, not a model: scanned inside the tar below, where the model
    # that names it is scanned with it (a loose data file on its own is unrecognised bytes: ERROR)
    cat.items.append(Item(Path("onnx/external/model.onnx"), "onnx", "onnx.save_model(save_as_external_data)"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(ext_dir / "model.onnx", "model/model.onnx")
        tar.add(ext_dir / "model.onnx.data", "model/model.onnx.data")
    cat.write("onnx", "external_bundle.tar", buf.getvalue(), "tar of an ONNX model and its external data")


# -- GGUF, safetensors, NumPy, tokenizers --------------------------------------------------------------
def build_small_formats(cat: Catalog) -> None:
    import gguf
    import numpy as np
    import safetensors.numpy
    import safetensors.torch
    import torch

    from tests.corpus.formats import BENIGN_CHAT_TEMPLATE

    templates = {"chatml": BENIGN_CHAT_TEMPLATE}
    for tname, template in templates.items():
        path = cat.add("gguf", f"{tname}.gguf", "gguf.GGUFWriter with a chat template")
        writer = gguf.GGUFWriter(str(path), "llama")
        writer.add_chat_template(template)
        writer.add_tensor("w", np.arange(16, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    dtypes = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"]
    arrays = {t: np.arange(6).astype(t).reshape(2, 3) for t in dtypes}
    cat.write("safetensors", "numpy.safetensors", safetensors.numpy.save(arrays, metadata={"format": "np"}),
              "safetensors.numpy.save")  # fmt: skip
    tensors = {t: torch.arange(6).to(getattr(torch, t)) for t in ("float16", "bfloat16", "float32", "int64")}
    cat.write("safetensors", "torch.safetensors", safetensors.torch.save(tensors), "safetensors.torch.save")
    numpy_dtypes = [*dtypes, "complex64", "complex128", "datetime64[s]", "timedelta64[ms]", "U4", "S4"]
    for t in numpy_dtypes:
        buf = io.BytesIO()
        np.save(buf, np.zeros(4, dtype=t))
        cat.write("numpy", f"{t.replace('[', '_').rstrip(']')}.npy", buf.getvalue(), f"np.save(dtype={t})")
    buf = io.BytesIO()
    np.save(buf, np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")]))
    cat.write("numpy", "structured.npy", buf.getvalue(), "np.save(structured dtype)")
    for fn in (np.savez, np.savez_compressed):
        buf = io.BytesIO()
        fn(buf, **{t: a for t, a in arrays.items()})
        cat.write("numpy", f"{fn.__name__}.npz", buf.getvalue(), f"np.{fn.__name__}")
    try:
        build_tokenizers(cat)
    except Exception as exc:
        cat.skip("tokenizers", "tokenizers", exc)


def build_tokenizers(cat: Catalog) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    text = ["the quick brown fox jumps over the lazy dog"] * 20
    for name, model, trainer in (
        ("bpe", models.BPE(unk_token="[UNK]"), trainers.BpeTrainer(special_tokens=["[UNK]"])),
        (
            "wordpiece",
            models.WordPiece(unk_token="[UNK]"),
            trainers.WordPieceTrainer(special_tokens=["[UNK]"]),
        ),
        ("unigram", models.Unigram(), trainers.UnigramTrainer(unk_token="[UNK]", special_tokens=["[UNK]"])),
        (
            "wordlevel",
            models.WordLevel(unk_token="[UNK]"),
            trainers.WordLevelTrainer(special_tokens=["[UNK]"]),
        ),
    ):
        tok = Tokenizer(model)
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.train_from_iterator(text, trainer)
        cat.write("tokenizers", f"{name}/tokenizer.json", tok.to_str().encode(), f"tokenizers {name}")


# -- archives of the above ---------------------------------------------------------------------------
def build_archives(cat: Catalog) -> None:
    members = [i for i in cat.items if i.family in ("sklearn", "torch", "safetensors", "tokenizers", "numpy")]
    picked = members[:: max(1, len(members) // (8 if cat.size == "ci" else 40))]
    payload = {str(i.path): (cat.root / i.path).read_bytes() for i in picked}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in payload.items():
            zf.writestr(name, data)
    cat.write("archives", "bundle.zip", buf.getvalue(), "zipfile of corpus files")
    for mode in ("w", "w:gz", "w:bz2", "w:xz"):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode=mode) as tar:  # type: ignore[call-overload]
            for name, data in payload.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            if payload:  # a relative symlink that stays inside, as `ln -s` + `tar c` would store it
                first = next(iter(payload))
                link = tarfile.TarInfo(posixpath.join(posixpath.dirname(first), "latest"))
                link.type, link.linkname = tarfile.SYMTYPE, posixpath.basename(first)
                tar.addfile(link)
        ext = "tar" + (f".{mode[2:]}" if ":" in mode else "")
        cat.write("archives", f"bundle.{ext}", buf.getvalue(), f"tarfile mode {mode!r}")


FAMILIES: dict[str, Callable[[Catalog], None]] = {
    "sklearn": build_sklearn,
    "gbm": build_gbm,
    "pandas": build_pandas,
    "torch": build_torch,
    "keras": build_keras,
    "onnx": build_onnx,
    "small": build_small_formats,
    "archives": build_archives,
}


def build(dest: Path, size: Size = "ci", families: tuple[str, ...] = tuple(FAMILIES)) -> Catalog:
    """Write the corpus under dest; every family that fails entirely is recorded as skipped."""
    logging.getLogger("absl").setLevel(logging.ERROR)  # keras: "HDF5 is legacy" once per .h5
    cat = Catalog(root=dest, size=size)
    for lib in LIBRARIES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            cat.versions[lib] = importlib.metadata.version(lib)
    for family in families:
        try:
            FAMILIES[family](cat)
        except ImportError as exc:
            cat.skip(family, family, f"library not installed: {exc}")
    return cat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--size", choices=("ci", "full"), default="ci")
    args = parser.parse_args()
    cat = build(args.dest, args.size)
    print(
        json.dumps(
            {"files": len(cat.items), "skipped": len(cat.skipped), "by_family": cat.counts()}, indent=1
        )
    )


if __name__ == "__main__":
    main()
