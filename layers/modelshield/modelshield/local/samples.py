"""Sample artifacts for the demo, written as raw bytes — nothing here imports torch or runs a pickle.

The malicious sample's payload is harmless (`echo pwned`) and is never executed: ModelShield only reads
opcodes. The benign sample has the structure `torch.save` produces for a small state dict.
"""

from __future__ import annotations

import io
import struct
import zipfile


def _unicode(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw  # BINUNICODE


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL


def torch_state_dict_pickle() -> bytes:
    """data.pkl of `torch.save({"weight": torch.ones(2, 2)})`: an OrderedDict of one rebuilt tensor."""
    tensor = (
        _global("torch._utils", "_rebuild_tensor_v2")
        + b"("  # MARK: args of _rebuild_tensor_v2
        + b"("  # MARK: persistent id tuple
        + _unicode("storage")
        + _global("torch", "FloatStorage")
        + _unicode("0")
        + _unicode("cpu")
        + b"K\x04"  # BININT1 numel
        + b"t"  # TUPLE
        + b"Q"  # BINPERSID: the loader maps it to archive/data/0
        + b"K\x00"  # storage offset
        + b"K\x02K\x02\x86"  # size (2, 2)
        + b"K\x02K\x01\x86"  # stride (2, 1)
        + b"\x89"  # requires_grad False
        + _global("collections", "OrderedDict")
        + b")R"  # backward hooks: OrderedDict()
        + b"t"  # TUPLE
        + b"R"  # REDUCE
    )
    return b"\x80\x02" + _global("collections", "OrderedDict") + b")R" + _unicode("weight") + tensor + b"s."


def benign_checkpoint(name: str = "model") -> bytes:
    """A PyTorch zip checkpoint: data.pkl, raw storage bytes, version and byteorder records."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{name}/data.pkl", torch_state_dict_pickle())
        archive.writestr(f"{name}/byteorder", "little")
        archive.writestr(f"{name}/data/0", struct.pack("<4f", 1.0, 1.0, 1.0, 1.0))
        archive.writestr(f"{name}/version", "3\n")
        archive.writestr(f"{name}/.data/serialization_id", "0123456789012345678901234567890123456789")
    return buffer.getvalue()


def malicious_pickle(command: str = "echo pwned") -> bytes:
    """A pickle that would call os.system(command) if loaded. ModelShield never loads it."""
    return b"\x80\x02" + _global("os", "system") + _unicode(command) + b"\x85R."  # TUPLE1, REDUCE, STOP
