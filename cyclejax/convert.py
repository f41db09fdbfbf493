"""Official PyTorch generators -> a cyclejax bundle: `python -m cyclejax.convert`.

    # a pair trained with the official train.py (checkpoints/<name>/latest_net_G_A.pth, _G_B.pth)
    python -m cyclejax.convert --G_A=latest_net_G_A.pth --G_B=latest_net_G_B.pth --output=OUT
    # a released pretrained model (one direction, e.g. horse2zebra.pth): it becomes 'AtoB'
    python -m cyclejax.convert --pretrained=horse2zebra.pth --output=OUT

with --netG, --ngf and --norm as the model was trained (defaults: resnet_9blocks, 64,
instance). The key mapping is `cyclejax.torch_weights`; from Python: `bundle.from_official`.
"""
from __future__ import annotations

from absl import flags

from cyclejax import bundle as bundle_lib
from cyclejax import cli, layers, networks

_G_A = flags.DEFINE_string("G_A", None, "official latest_net_G_A.pth (A -> B)")
_G_B = flags.DEFINE_string("G_B", None, "official latest_net_G_B.pth (B -> A)")
_PRETRAINED = flags.DEFINE_string("pretrained", None, "a released one-direction model such as horse2zebra.pth")
_OUTPUT = flags.DEFINE_string("output", None, "the bundle folder to write", required=True)
_NETG = flags.DEFINE_enum("netG", "resnet_9blocks", list(networks.GENERATOR_ARCHS), "the official --netG")
_NGF = flags.DEFINE_integer("ngf", 64, "the official --ngf")
_NORM = flags.DEFINE_enum("norm", "instance", list(layers.NORMS), "the official --norm")
_NO_DROPOUT = flags.DEFINE_bool("no_dropout", True, "the official --no_dropout (CycleGAN's default)")
_DOMAINS = flags.DEFINE_string("domains", None, "names of A and B, e.g. horse,zebra (default: from the file name)")


def main(argv):
    del argv
    if _PRETRAINED.value and (_G_A.value or _G_B.value):
        cli.fail("give either --pretrained or --G_A/--G_B, not both")
    files = {"AtoB": _PRETRAINED.value} if _PRETRAINED.value else {
        d: f for d, f in (("AtoB", _G_A.value), ("BtoA", _G_B.value)) if f}
    if not files:
        cli.fail("give --pretrained=<name>.pth, or --G_A and/or --G_B")
    domains = None
    if _DOMAINS.value:
        a, _, b = _DOMAINS.value.partition(",")
        domains = {"A": a, "B": b or "B"}
    b = bundle_lib.from_official(files, _NETG.value, _NGF.value, _NORM.value, _NO_DROPOUT.value, domains=domains)
    out = bundle_lib.save(b, _OUTPUT.value)
    print(f"cyclejax: wrote {out} ({', '.join(b.directions)}; {b.config['netG']}, ngf {b.config['ngf']})", flush=True)


if __name__ == "__main__":
    cli.run(main)
