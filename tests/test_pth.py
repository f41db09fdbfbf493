"""cyclejax.pth reads what torch.save writes, in both layouts, without torch and without running code."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from cyclejax import pth, torch_weights
from cyclejax.torch_weights import ConversionError

FORMATS = {"zip": True, "legacy": False}


def official_like_state_dict() -> dict[str, torch.Tensor]:
    """The kinds of entries official files hold, plus the layouts a reader can get wrong."""
    g = torch.Generator().manual_seed(0)
    bn = torch.nn.BatchNorm2d(4)
    bn.train()(torch.randn(2, 4, 3, 3, generator=g))  # non-trivial running stats, num_batches_tracked=1
    sd = torch.nn.Conv2d(3, 4, 7).state_dict()  # an OrderedDict with _metadata
    sd.update({f"model.2.{k}": v for k, v in bn.state_dict().items()})
    shared = torch.arange(30, dtype=torch.float32)
    sd.update({
        "half": torch.randn(5, generator=g).half(),
        "bfloat16": torch.randn(5, generator=g).bfloat16(),
        "transposed": torch.randn(3, 5, generator=g).t(),  # non-contiguous
        "shared_a": shared[3:15].view(3, 4),  # two views of one storage, at offsets
        "shared_b": shared[20:26:2],  # ... and strided
        "scalar": torch.tensor(0.25),  # 0-d
        "empty": torch.zeros(0, 3),
        "mask": torch.tensor([True, False, True]),
        "bytes": torch.arange(4, dtype=torch.uint8),
        "param": torch.nn.Parameter(torch.randn(2, 2, generator=g)),
    })
    return sd


def as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.detach().numpy()


def assert_same(arrays: dict[str, np.ndarray], sd: dict[str, torch.Tensor]):
    assert list(arrays) == list(sd)
    for k, t in sd.items():
        got = arrays[k].view(np.int16) if t.dtype == torch.bfloat16 else arrays[k]
        want = as_numpy(t)
        assert got.dtype == want.dtype and got.shape == want.shape, k
        np.testing.assert_array_equal(got, want, err_msg=k)
        assert got.flags.c_contiguous and got.flags.writeable, k


@pytest.mark.parametrize("fmt", FORMATS)
def test_reads_torch_save_exactly(tmp_path, fmt):
    sd = official_like_state_dict()
    assert hasattr(sd, "_metadata")
    torch.save(sd, tmp_path / "net.pth", _use_new_zipfile_serialization=FORMATS[fmt])
    assert_same(pth.read_state_dict(tmp_path / "net.pth"), sd)
    # A training checkpoint: the dict's 'state_dict' entry.
    torch.save({"epoch": 3, "state_dict": sd}, tmp_path / "ckpt.pth", _use_new_zipfile_serialization=FORMATS[fmt])
    assert_same(pth.read_state_dict(tmp_path / "ckpt.pth"), sd)


def test_legacy_storage_views(tmp_path):
    """torch < 0.4 saved slices of a storage as views: ('storage', type, root, loc, numel, (view, offset, size))."""

    class Tensor:
        def __init__(self, pid, offset, size, stride):
            self.args = (pid, offset, size, stride)

        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, self.args + (False, {})

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return obj if isinstance(obj, tuple) and obj[:1] == ("storage",) else None

    root = np.arange(12, dtype=np.float32)
    view = ("storage", torch.FloatStorage, "root", "cpu", 12, ("view", 4, 6))
    whole = ("storage", torch.FloatStorage, "root", "cpu", 12, None)
    path = tmp_path / "old.pth"
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, f, protocol=2)
        Pickler(f, protocol=2).dump({"w": Tensor(view, 1, (2, 2), (1, 2)), "all": Tensor(whole, 0, (12,), (1,))})
        pickle.dump(["root"], f, protocol=2)
        f.write(np.int64(12).tobytes() + root.tobytes())
    want = torch.load(path, weights_only=True)
    got = pth.read_state_dict(path)
    np.testing.assert_array_equal(got["w"], [[5, 7], [6, 8]])
    assert_same(got, want)


def test_load_pth_gives_float32_and_keeps_integers(tmp_path):
    sd = official_like_state_dict()
    torch.save(sd, tmp_path / "net.pth", _use_new_zipfile_serialization=False)
    arrays = torch_weights.load_pth(tmp_path / "net.pth")
    for k, t in sd.items():
        want = t.detach().numpy() if not t.is_floating_point() else t.detach().float().numpy()
        assert arrays[k].dtype == want.dtype, k
        np.testing.assert_array_equal(arrays[k], want, err_msg=k)
    assert arrays["model.2.num_batches_tracked"].dtype == np.int64


def test_reads_without_torch(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pth")
    code = ("import sys; from cyclejax import pth; "
            f"assert pth.read_state_dict({str(tmp_path / 'w.pth')!r})['w'].sum() == 2; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"echo pwned > {self.marker}",)


@pytest.mark.parametrize("fmt", ["zip", "legacy", "plain pickle"])
def test_refuses_pickles_that_run_code(tmp_path, fmt):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    if fmt == "plain pickle":
        path.write_bytes(pickle.dumps({"w": Evil(marker)}))
    else:
        torch.save({"w": torch.ones(2), "x": Evil(marker)}, path, _use_new_zipfile_serialization=FORMATS[fmt])
    with pytest.raises(ConversionError, match=r"evil\.pth .*(posix|os)\.system.*refused"):
        pth.read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_file(tmp_path, fmt):
    torch.save(official_like_state_dict(), tmp_path / "net.pth", _use_new_zipfile_serialization=FORMATS[fmt])
    data = (tmp_path / "net.pth").read_bytes()
    for cut in (len(data) - 10, len(data) // 2, 20):
        (tmp_path / "cut.pth").write_bytes(data[:cut])
        with pytest.raises(ConversionError, match=r"cut\.pth is not a readable PyTorch state dict"):
            pth.read_state_dict(tmp_path / "cut.pth")


def test_garbage_missing_and_non_state_dicts(tmp_path):
    (tmp_path / "noise.pth").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ConversionError, match=r"noise\.pth is not a readable PyTorch state dict"):
        pth.read_state_dict(tmp_path / "noise.pth")
    with pytest.raises(ConversionError, match=r"missing\.pth does not exist"):
        pth.read_state_dict(tmp_path / "missing.pth")
    with pytest.raises(ConversionError, match="is not a file"):
        pth.read_state_dict(tmp_path)
    torch.save([torch.ones(1)], tmp_path / "list.pth")
    with pytest.raises(ConversionError, match=r"list\.pth does not hold a state dict of tensors"):
        pth.read_state_dict(tmp_path / "list.pth")
    torch.save({"w": torch.ones(1), "step": 3}, tmp_path / "mixed.pth")
    with pytest.raises(ConversionError, match=r"mixed\.pth does not hold a state dict of tensors \('step'"):
        pth.read_state_dict(tmp_path / "mixed.pth")
