"""CycleGAN on Cityscapes labels ↔ photos, from folders (TFDS has no unpaired Cityscapes).

The paper's FCN-score experiment (Table 2/3): 2975 training images at 128x128, so
resnet_6blocks and a 128 crop; the rest are the official defaults. Build the folders with
the official repository's `datasets/prepare_cityscapes_dataset.py` (photos as trainA/testA,
label maps as trainB/testB) and point --config.dataset at them:

    python -m cyclejax.train --config=experiments/configs/cityscapes.py \
        --config.dataset=/data/cityscapes --workdir=runs/cityscapes

On a TPU VM slice: the same command through
`gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=all --command="..."`, with a
shared --workdir (gs://...).

Reference (paper, Table 2/3): labels→photo per-pixel acc 0.52, per-class acc 0.17, class
IoU 0.11; photo→labels 0.58 / 0.22 / 0.16.
"""
from cyclejax.configs import default


def get_config():
    c = default.paper()
    c.update(dataset="/data/cityscapes", netG="resnet_6blocks", load_size=143, crop_size=128)
    return c
