"""The paper's experiments, one row per task: `--config=experiments/configs/paper.py:<task>`.

Every task keeps the official defaults (`cyclejax/configs/default.py:paper`): resnet_9blocks,
70x70 PatchGAN, instance norm, lsgan, lambda 10, identity 0.5, pool 50, Adam 2e-4 / 0.5,
batch 1, load 286 -> random crop 256 with flips, 100 + 100 epochs. A row changes only what
differs (the dataset, and for Cityscapes the sizes). Variants append: `:horse2zebra,tiny`.

On one GPU or a single-host TPU:

    python -m cyclejax.train --config=experiments/configs/paper.py:horse2zebra --workdir=runs/horse2zebra

On a TPU VM slice (every host runs the same command; --workdir must be shared, e.g. a GCS
bucket; with several devices set --config.batch_size to a multiple of the device count, the
paper used 1):

    gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=all --command="cd cyclejax && \
        python -m cyclejax.train --config=experiments/configs/paper.py:horse2zebra --workdir=gs://$BUCKET/horse2zebra"

Cityscapes comes from folders (TFDS has no unpaired Cityscapes): build them with the
official `datasets/prepare_cityscapes_dataset.py` (photos as trainA/testA, label maps as
trainB/testB) and add `--config.dataset=/data/cityscapes`.

References: FIDs of the official checkpoints measured by mmagic; Cityscapes FCN scores from
the paper's Tables 2 and 3 (docs/evaluation.md has the table).
"""
from cyclejax.configs import default

# task: (what it is, overrides of the official defaults, reference)
TASKS = {
    "horse2zebra": ("horse <-> zebra (ImageNet, 1067 / 1334 train images)", {},
                    "FID 62.1 with identity loss, 77.2 without"),
    "apple2orange": ("apple <-> orange (ImageNet, 995 / 1019)", {}, ""),
    "summer2winter_yosemite": ("summer <-> winter Yosemite (Flickr, 1231 / 962)", {}, "FID 77.3 (summer->winter)"),
    "monet2photo": ("Monet paintings <-> landscape photos (1072 / 6287), identity loss as the paper", {}, ""),
    "cezanne2photo": ("Cezanne paintings <-> photos (525 / 6287)", {}, ""),
    "ukiyoe2photo": ("Ukiyo-e prints <-> photos (562 / 6287)", {}, ""),
    "vangogh2photo": ("Van Gogh paintings <-> photos (400 / 6287)", {}, ""),
    "maps": ("aerial photo <-> Google map (1096 / 1096 unpaired)", {}, ""),
    "facades": ("label map <-> facade photo (400 / 400 unpaired)", {}, "FID 123.6"),
    "iphone2dslr_flower": ("iPhone <-> DSLR flower photos (1813 / 3316), identity loss as the paper", {}, ""),
    "cityscapes": ("labels <-> photos at 128x128 (2975), from folders",
                   {"dataset": "/data/cityscapes", "netG": "resnet_6blocks", "load_size": 143, "crop_size": 128},
                   "labels->photo FCN per-pixel 0.52, per-class 0.17, IoU 0.11; photo->labels 0.58 / 0.22 / 0.16"),
}


def get_config(arg: str = "horse2zebra"):
    task, *variants = arg.split(",")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; experiments/configs/paper.py has {', '.join(TASKS)}")
    if set(variants) - {"tiny"}:
        raise ValueError(f"unknown variant(s) {sorted(set(variants) - {'tiny'})}; the one variant is 'tiny'")
    c = default.get_config("paper")
    c.dataset = f"cycle_gan/{task}"
    c.update(TASKS[task][1])
    if "tiny" in variants:
        default.tiny(c)
    return c
