"""PyTorch state-dict files (.pth) read into numpy arrays without torch, and without running code.

`torch.save` writes a pickle whose tensors point at raw storages kept beside it, in one of
two layouts:

* zip (torch >= 1.6): `<archive>/data.pkl` holds the pickle, `<archive>/data/<key>` each
  storage's bytes and `<archive>/byteorder` their byte order;
* legacy (torch < 1.6, e.g. the official CycleGAN generators of 2017-2019): five pickles
  one after another (a magic number, the protocol version 1001, system info, the state
  dict, the list of storage keys), then for each key in that order an int64 element count
  and the storage's bytes (both little-endian).

In both, a tensor is pickled as `torch._utils._rebuild_tensor_v2(storage, offset, size,
stride, ...)` with the storage as a persistent id `('storage', <torch.XStorage>, key,
location, numel[, view_metadata])`. The unpickler here resolves only the few globals such a
state dict uses and refuses any other (a pickle can call any importable function, e.g.
`os.system`), so reading an untrusted file executes nothing.
"""
from __future__ import annotations

import collections
import io
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping

import ml_dtypes
import numpy as np

from cyclejax.errors import ConversionError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch.<Name>Storage -> the element type of its bytes.
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


@dataclass(frozen=True)
class _StorageType:
    """What `torch.XStorage` unpickles to: only its element type (not callable)."""
    dtype: np.dtype


@dataclass(frozen=True)
class _Storage:
    """A persistent id: storage `key` of `dtype`, or elements [offset, offset+size) of it (a legacy view)."""
    key: str
    dtype: np.dtype
    view: tuple[int, int] | None = None


@dataclass(frozen=True)
class _Tensor:
    """A tensor to build once the storages are read (legacy files store them after the pickle)."""
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_unused) -> _Tensor:
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor whose storage is not a storage")
    return _Tensor(storage, int(storage_offset), tuple(map(int, size)), tuple(map(int, stride)))


def _rebuild_parameter(data, *_unused):
    return data


_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(np.dtype(dtype)) for name, dtype in _STORAGE_DTYPES.items()},
}


class _Unpickler(pickle.Unpickler):
    """Resolves only `_GLOBALS`; anything else is a `ConversionError` and is never imported."""

    def __init__(self, file: BinaryIO, path: Path):
        super().__init__(file, encoding="utf-8")
        self.path = path
        self.storages: dict[str, _Storage] = {}  # root key -> its first persistent id

    def find_class(self, module: str, name: str):
        try:
            return _GLOBALS[(module, name)]
        except KeyError:
            raise ConversionError(f"{self.path} is not a plain state dict: its pickle asks for {module}.{name}, "
                                  f"which is refused (only tensors and dicts are read; the file may be unsafe "
                                  f"or a whole pickled model)") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:80]}")
        view = pid[5] if len(pid) == 6 else None
        if view is not None:  # legacy: (view_key, offset, size) of the root storage pid[2]
            view = (int(view[1]), int(view[2]))
        storage = _Storage(str(pid[2]), pid[1].dtype, view)
        self.storages.setdefault(storage.key, storage)
        return storage


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch state-dict file, each as a numpy array of its own dtype.

    A dict holding a 'state_dict' entry (a training checkpoint) gives that entry. Raises
    `ConversionError` naming the file when it is missing, damaged, not a state dict of
    tensors, or asks its unpickler for anything beyond tensors and dicts.
    """
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        with open(path, "rb") as f:
            zipped = f.read(4) == b"PK\x03\x04"
            f.seek(0)
            top, storage = _read_zip(f, path) if zipped else _read_legacy(f, path)
            tensors = _tensors(top, path)
            return {k: _build(v, storage(v.storage)) for k, v in tensors.items()}
    except ConversionError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged file fails in zipfile, pickle, struct or numpy
        raise ConversionError(f"{path} is not a readable PyTorch state dict ({type(e).__name__}: {e})") from e


def _tensors(top: Any, path: Path) -> Mapping[str, _Tensor]:
    """The state dict in the unpickled object: itself, or its 'state_dict' entry."""
    if isinstance(top, Mapping) and isinstance(top.get("state_dict"), Mapping):
        top = top["state_dict"]
    if not isinstance(top, Mapping) or not top:
        raise ConversionError(f"{path} does not hold a state dict of tensors (it holds a {type(top).__name__})")
    others = [k for k, v in top.items() if not (isinstance(k, str) and isinstance(v, _Tensor))]
    if others:
        raise ConversionError(f"{path} does not hold a state dict of tensors ({str(others[0])[:60]!r} is not "
                              f"a tensor)")
    return top


def _read_zip(f: BinaryIO, path: Path) -> tuple[Any, Callable[[_Storage], np.ndarray]]:
    """The unpickled object of a zip-format file and a function giving a storage's elements."""
    archive = zipfile.ZipFile(f)
    pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise ValueError("a zip file without one <archive>/data.pkl")
    prefix = pickles[0][: -len("data.pkl")]
    names = set(archive.namelist())
    order = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
    top = _Unpickler(io.BytesIO(archive.read(pickles[0])), path).load()
    endian = {"little": "<", "big": ">"}[order]
    roots: dict[str, np.ndarray] = {}  # read once, however many tensors share them

    def storage(s: _Storage) -> np.ndarray:
        if s.key not in roots:
            roots[s.key] = np.frombuffer(archive.read(f"{prefix}data/{s.key}"), s.dtype.newbyteorder(endian))
        return _view(roots[s.key], s)

    return top, storage


def _read_legacy(f: BinaryIO, path: Path) -> tuple[Any, Callable[[_Storage], np.ndarray]]:
    """The unpickled object of a legacy-format file and a function giving a storage's elements."""
    def load():  # every piece through the restricted unpickler: any of them could call a global
        return _Unpickler(f, path).load()

    if load() != _LEGACY_MAGIC:
        raise ValueError("neither a zip nor a legacy torch.save file (wrong magic number)")
    if (version := load()) != _LEGACY_PROTOCOL:
        raise ValueError(f"legacy protocol version {version}, not {_LEGACY_PROTOCOL}")
    load()  # system info: its byte order is not used; like torch, read counts and data as little-endian
    unpickler = _Unpickler(f, path)
    top = unpickler.load()
    keys = load()
    if not isinstance(keys, list):
        raise ValueError("no list of storage keys after the pickle")
    roots = {}
    for key in keys:
        if key not in unpickler.storages:
            raise ValueError(f"storage {key!r} is listed but used by no tensor")
        dtype = unpickler.storages[key].dtype.newbyteorder("<")
        (numel,) = struct.unpack("<q", _read_exactly(f, 8))
        if numel < 0:
            raise ValueError(f"storage {key!r} has {numel} elements")
        roots[key] = np.frombuffer(_read_exactly(f, numel * dtype.itemsize), dtype)

    def storage(s: _Storage) -> np.ndarray:
        return _view(roots[s.key], s)

    return top, storage


def _read_exactly(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError(f"the file ends {n - len(data)} bytes early")
    return data


def _view(flat: np.ndarray, s: _Storage) -> np.ndarray:
    if s.view is None:
        return flat
    offset, size = s.view
    if offset < 0 or offset + size > flat.size:
        raise ValueError(f"storage view [{offset}, {offset + size}) outside storage {s.key} of {flat.size}")
    return flat[offset:offset + size]


def _build(t: _Tensor, flat: np.ndarray) -> np.ndarray:
    """The tensor's elements as a new C-contiguous array in native byte order (bounds checked)."""
    if len(t.shape) != len(t.stride) or min(t.shape + t.stride + (t.offset,), default=0) < 0:
        raise ValueError(f"bad tensor layout: shape {t.shape}, stride {t.stride}, offset {t.offset}")
    if 0 in t.shape:
        return np.zeros(t.shape, flat.dtype.newbyteorder("="))
    last = t.offset + sum((n - 1) * s for n, s in zip(t.shape, t.stride))
    if last >= flat.size:
        raise ValueError(f"a tensor of shape {t.shape} reaches element {last} of a storage of {flat.size}")
    view = np.lib.stride_tricks.as_strided(flat[t.offset:], t.shape, [s * flat.itemsize for s in t.stride],
                                           writeable=False)
    return np.array(view, dtype=flat.dtype.newbyteorder("="), order="C")  # a copy; 0-d stays 0-d
