"""CycleGAN on maps: aerial photo ↔ Google map (1096 / 1096 unpaired), the paper's AMT perceptual study.

The paper's settings, which are the official defaults: resnet_9blocks, 70x70 PatchGAN,
instance norm, lsgan, lambda 10, identity 0.5, pool 50, Adam 2e-4 / 0.5, batch 1,
load 286 -> random crop 256 with flips, 100 + 100 epochs.

On a TPU VM (every host of the slice runs the same command; --workdir must be shared,
e.g. a GCS bucket):

    gcloud compute tpus tpu-vm ssh $TPU --zone=$ZONE --worker=all --command="cd cyclejax && \
        python -m cyclejax.train --config=experiments/configs/maps.py --workdir=gs://$BUCKET/maps"

On one GPU or a single-host TPU: python -m cyclejax.train --config=experiments/configs/maps.py --workdir=runs/maps
With several devices, set --config.batch_size to a multiple of the device count (the paper used 1).
"""
from cyclejax.configs import default


def get_config():
    c = default.paper()
    c.dataset = "cycle_gan/maps"
    return c
