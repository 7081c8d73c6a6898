"""Pure scanners: bytes (or a seekable stream) plus limits in, findings out. No AWS, no writes.

Importing this package registers every format scanner; use `scan_path` / `scan_stream`.
"""

from __future__ import annotations

# Each import registers that module's scanner(s) with the registry (one module per format).
from modelshield.scanning import (  # noqa: F401
    compressed,
    gguf,
    joblib,
    keras,
    lightgbm,
    numpy_arrays,
    onnx,
    pickles,
    pytorch,
    safetensors,
    savedmodel,
    sevenzip,
    signatures,
    tars,
    text,
    xgboost,
    zips,
)
from modelshield.scanning.registry import Limits, ScanContext, register, scan_path, scan_stream

__all__ = ["Limits", "ScanContext", "register", "scan_path", "scan_stream"]
