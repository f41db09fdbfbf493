"""Generator bundles: a trained or imported CycleGAN as a folder you can hand to someone.

A bundle holds both generators (or one, for the official single-direction pretrained
models) and nothing of the discriminators or optimisers:

    bundle.json          format version, the generator config (netG, ngf, norm, channels,
                         dtype), the domain names, the size multiple inputs need, the source
    AtoB.msgpack         {'params': ..., 'batch_stats': ...} of the A -> B generator (Flax msgpack)
    AtoB.jax_export      the same generator as a serialized `jax.export` artifact
    BtoA.msgpack, BtoA.jax_export   the B -> A generator, when present

The `.jax_export` files take float32 NHWC images in [-1, 1] of shape (batch, m*h, m*w, C),
with m the multiple in bundle.json (4 for ResNets, 256 or 128 for U-Nets), and return the
translation; the batch, height and width are symbolic, and the weights are inside. They run
with jax alone, without cyclejax:

    exported = jax.export.deserialize(open("AtoB.jax_export", "rb").read())
    y = exported.call(x)

Where bundles come from: `from_workdir` (a training run's checkpoint, `python -m
cyclejax.export`), `from_official` (the official PyTorch generators, `python -m
cyclejax.convert`). `load(path)` reads a bundle back, `load_any(path)` a bundle or a
training workdir (or a pretrained name, or hf://OWNER/REPO on the Hugging Face Hub: `cyclejax.hub`);
`Bundle.jit_apply(direction)` is the jitted generator.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from cyclejax import checkpoints, downloads, hub, networks, pretrained, storage, torch_weights
from cyclejax import model as model_lib
from cyclejax.errors import UserError

FORMAT = "cyclejax-generator-bundle"
VERSION = 1
DIRECTIONS = ("AtoB", "BtoA")
GENERATOR_KEYS = ("netG", "ngf", "norm", "no_dropout", "input_nc", "output_nc", "dtype")


class BundleError(UserError):
    """A folder that is not a readable bundle, or a direction it does not hold."""


@dataclasses.dataclass
class Bundle:
    config: dict[str, Any]  # GENERATOR_KEYS plus 'domains' {'A': name, 'B': name} and 'source'
    variables: dict[str, dict[str, Any]]  # direction -> {'params': ..., 'batch_stats': ...}

    @property
    def directions(self) -> tuple[str, ...]:
        return tuple(d for d in DIRECTIONS if d in self.variables)

    @property
    def multiple(self) -> int:
        return networks.generator_multiple(self.config["netG"])

    def generator(self, direction: str, conv_impl: str = "auto") -> nn.Module:
        self.check_direction(direction)
        c = self.config
        nc_in, nc_out = (c["input_nc"], c["output_nc"]) if direction == "AtoB" else (c["output_nc"], c["input_nc"])
        return networks.define_G(c["netG"], nc_in, nc_out, ngf=c["ngf"], norm=c["norm"],
                                 use_dropout=not c["no_dropout"], dtype=model_lib.DTYPES[c.get("dtype", "float32")],
                                 conv_impl=conv_impl)

    def check_direction(self, direction: str) -> None:
        if direction not in self.directions:
            raise BundleError(f"this bundle has the generator(s) {list(self.directions)}, not {direction!r}"
                              + (" (an official pretrained model holds one direction; it is 'AtoB')"
                                 if self.directions == ("AtoB",) else ""))

    def apply_fn(self, direction: str, conv_impl: str = "auto"):
        """A pure function float images (N, H, W, C) in [-1, 1] -> translations (training-mode norms,
        as the official test script runs them); `conv_impl` as in the config."""
        net = self.generator(direction, conv_impl)
        v = self.variables[direction]
        return lambda x: model_lib.apply_train_mode(net, v["params"], v.get("batch_stats") or {}, x).astype(jnp.float32)

    def jit_apply(self, direction: str):
        return jax.jit(self.apply_fn(direction))

    def describe(self) -> str:
        """What the generators are, in the official options' words."""
        c = self.config
        if c["netG"].startswith("unet"):
            return f"U-Net generator ({c['netG']}) with ngf={c['ngf']}, norm={c['norm']}"
        blocks = c["netG"].removeprefix("resnet_").removesuffix("blocks")
        return f"ResNet generator with {blocks} blocks, ngf={c['ngf']}, norm={c['norm']}"


def domain_names(dataset: str) -> dict[str, str]:
    """'cycle_gan/horse2zebra' -> {'A': 'horse', 'B': 'zebra'}; otherwise A and B."""
    name = Path(str(dataset).rstrip("/")).name
    if "2" in name:
        a, _, b = name.partition("2")
        if a and b:
            return {"A": a, "B": b}
    return {"A": "A", "B": "B"}


def generator_config(config, **extra) -> dict[str, Any]:
    out = {k: config[k] for k in GENERATOR_KEYS if k != "dtype"}
    out["dtype"] = config.get("dtype", "float32")
    out.update(extra)
    return out


def export_generator(bundle: Bundle, direction: str) -> bytes:
    """The serialized `jax.export` artifact of one generator, weights inside, for CPU, GPU and TPU."""
    m = bundle.multiple
    c = bundle.config["input_nc"] if direction == "AtoB" else bundle.config["output_nc"]
    # The smallest feature map is (h, w); reflection padding there needs it at least 2 wide.
    b, h, w = jax.export.symbolic_shape("b, h, w", constraints=("h >= 2", "w >= 2") if m == 4 else ())
    spec = jax.ShapeDtypeStruct((b, m * h, m * w, c), jnp.float32)
    # XLA's own convolutions: an artifact for every platform holds no custom calls (oneDNN's are
    # this machine's, and jax.export serializes only custom calls with compatibility guarantees).
    exported = jax.export.export(jax.jit(bundle.apply_fn(direction, conv_impl="xla")),
                                 platforms=("cpu", "cuda", "tpu"))(spec)
    return bytes(exported.serialize())


def save(bundle: Bundle, path: storage.PathLike, with_export: bool = True) -> epath.Path:
    """Writes the bundle to `path` (local or gs://). Everything is serialised (and exported)
    before the first write; bundle.json, which makes the folder a bundle, is removed first
    and written last, so that an interrupted save over an older bundle leaves no mix of the
    two that loads. Artifacts of the older bundle that this one does not have are removed."""
    path = storage.resolve(path)
    files = {}
    for d in bundle.directions:
        files[f"{d}.msgpack"] = flax.serialization.msgpack_serialize(jax.tree_util.tree_map(np.asarray,
                                                                                            bundle.variables[d]))
        if with_export:
            files[f"{d}.jax_export"] = export_generator(bundle, d)
    meta = {"format": FORMAT, "version": VERSION, "directions": list(bundle.directions), **bundle.config,
            "multiple": bundle.multiple}
    try:
        path.mkdir(parents=True, exist_ok=True)
        stale = [path / "bundle.json"] + [path / f"{d}{ext}" for d in DIRECTIONS for ext in (".msgpack", ".jax_export")
                                          if f"{d}{ext}" not in files]
        for f in stale:
            if f.exists():
                f.unlink()
        for name, blob in files.items():
            (path / name).write_bytes(blob)
        (path / "bundle.json").write_text(json.dumps(meta, indent=2))
    except OSError as e:
        raise BundleError(f"{path} cannot be written ({e}); choose a folder you can write") from e
    return path


def load(path: storage.PathLike) -> Bundle:
    """Reads a bundle written by `save` (by `python -m cyclejax.export` or `cyclejax.convert`)."""
    path = storage.resolve(path)
    meta_file = path / "bundle.json"
    if not meta_file.is_file():
        raise BundleError(f"{path} is not a generator bundle: {meta_file} does not exist "
                          f"(make one with python -m cyclejax.export or python -m cyclejax.convert)")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"{meta_file} is not valid JSON ({e}); the bundle is corrupt, export it again") from e
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise BundleError(f"{meta_file} is not a {FORMAT} of version {VERSION} "
                          f"(format {meta.get('format')!r}, version {meta.get('version')!r})")
    config = {k: v for k, v in meta.items() if k not in ("format", "version", "directions", "multiple")}
    missing = [k for k in GENERATOR_KEYS if k not in config]
    if missing:
        raise BundleError(f"{meta_file} lacks the keys {missing}; the bundle is corrupt, export it again")
    variables = {}
    for d in meta["directions"]:
        f = path / f"{d}.msgpack"
        if not f.is_file():
            raise BundleError(f"{f} is missing: bundle.json lists the direction {d}")
        try:
            variables[d] = flax.serialization.msgpack_restore(f.read_bytes())
        except Exception as e:  # msgpack raises several types on truncated or foreign bytes
            raise BundleError(f"{f} cannot be read ({type(e).__name__}: {e}); the bundle is corrupt") from e
    bundle = Bundle(config=config, variables=variables)
    for d in bundle.directions:
        _check_shapes(bundle, d, f"{path / d}.msgpack")
    return bundle


def _check_shapes(bundle: Bundle, direction: str, where: str) -> None:
    """The stored arrays must have the shapes of the generator bundle.json describes."""
    net = bundle.generator(direction)
    m = bundle.multiple
    c = bundle.config["input_nc"] if direction == "AtoB" else bundle.config["output_nc"]
    like = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, m, m, c)), train=False))
    want = jax.tree_util.tree_map(lambda a: tuple(a.shape), {"params": like["params"]})
    got = jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), {"params": bundle.variables[direction].get("params")})
    if want != got:
        raise BundleError(f"{where} does not hold a {bundle.config['netG']} generator with ngf={bundle.config['ngf']} "
                          f"and norm={bundle.config['norm']} as bundle.json says; the bundle is corrupt")


def from_workdir(workdir: storage.PathLike, step: int | None = None) -> Bundle:
    """The bundle of a run's checkpoint (default: the latest), its directions named after the dataset's A and B."""
    try:
        config, params, stats, step = checkpoints.restore_generators(workdir, step)
    except FileNotFoundError as e:
        raise BundleError(str(e)) from e
    # With direction=BtoA the run trained G_A on the dataset's B images: undo the swap so that
    # 'AtoB' always means the dataset's trainA -> trainB.
    a_to_b, b_to_a = ("G_B", "G_A") if config.get("direction") == "BtoA" else ("G_A", "G_B")
    variables = {"AtoB": {"params": params[a_to_b], "batch_stats": stats[a_to_b]},
                 "BtoA": {"params": params[b_to_a], "batch_stats": stats[b_to_a]}}
    weights = f"average (ema_decay {config['ema_decay']})" if config.get("ema_decay") else "last"
    gen = generator_config(config, domains=domain_names(config["dataset"]),
                           source={"workdir": str(storage.resolve(workdir)), "step": step,
                                   "dataset": config["dataset"], "weights": weights})
    if config.get("direction") == "BtoA":
        gen["input_nc"], gen["output_nc"] = config["output_nc"], config["input_nc"]
    return Bundle(config=gen, variables=variables)


def from_official(files: dict[str, str | Path], netG: str = "resnet_9blocks", ngf: int = 64, norm: str = "instance",
                  no_dropout: bool = True, input_nc: int = 3, output_nc: int = 3,
                  domains: dict[str, str] | None = None) -> Bundle:
    """A bundle from official generator files: {'AtoB': G_A.pth, 'BtoA': G_B.pth} or just {'AtoB': ...}."""
    config = {"netG": netG, "ngf": ngf, "norm": norm, "no_dropout": no_dropout, "input_nc": input_nc,
              "output_nc": output_nc, "dtype": "float32"}
    config["domains"] = domains or domain_names(Path(next(iter(files.values()))).stem)
    config["source"] = {"converted_from": {d: str(Path(f).absolute()) for d, f in files.items()}}
    skeleton = Bundle(config=config, variables={d: {} for d in files})
    variables = {}
    for direction, f in files.items():
        nc = input_nc if direction == "AtoB" else output_nc
        variables[direction] = torch_weights.state_dict_to_variables(
            torch_weights.load_pth(f), skeleton.generator(direction), nc, skeleton.multiple, str(f),
            describe=skeleton.describe())
        variables[direction].setdefault("batch_stats", {})
    return Bundle(config=config, variables=variables)


def from_pretrained(name: str, progress: bool | None = None) -> Bundle:
    """An official released generator by name (`pretrained.NAMES`): its .pth downloaded once and
    sha256-checked on every use, converted once into a bundle cached beside it."""
    pth = pretrained.generator_file(name, progress)
    cached = downloads.cache_root() / "bundles" / f"{name}-{downloads.recorded_sha256(pth)[:16]}"
    if (cached / "bundle.json").is_file():
        return load(cached)
    a, _, b = name.partition("2")
    domains = {"A": "photo", "B": name.removeprefix("style_")} if name.startswith("style_") else {"A": a, "B": b}
    b = from_official({"AtoB": pth}, domains=domains)
    b.config["source"] = {"pretrained": name, "url": pretrained.source(name)}
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.part")
    shutil.rmtree(tmp, ignore_errors=True)
    save(b, tmp)
    shutil.rmtree(cached, ignore_errors=True)
    os.replace(tmp, cached)  # a kill while converting leaves no half bundle under the final name
    return b


def load_any(model: storage.PathLike) -> Bundle:
    """A bundle folder, a training workdir exported on the fly (its latest checkpoint), the
    name of an official pretrained generator (`python -m cyclejax.pretrained` lists them), or a
    bundle on the Hugging Face Hub, hf://OWNER/REPO[@REVISION] (`cyclejax.hub`)."""
    if hub.is_spec(model):
        return load(hub.download(model))
    path = storage.resolve(model)
    if (path / "bundle.json").is_file():
        return load(path)
    if (path / "checkpoints").is_dir():
        return from_workdir(path)
    if str(model) in pretrained.NAMES and not path.exists():
        return from_pretrained(str(model))
    raise BundleError(f"{path} is neither a bundle (no bundle.json), a training workdir (no checkpoints/), a Hub "
                      f"model (hf://OWNER/REPO) nor the name of a pretrained model ({', '.join(pretrained.NAMES)})")
