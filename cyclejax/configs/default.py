"""The quick-start config: CycleGAN on the embedded dataset, a few minutes on a laptop CPU.

    python -m cyclejax.train                       # this config, into ./runs/<time>
    python -m cyclejax.train --workdir=runs/demo --config=cyclejax/configs/default.py

Keys named as the official options (see the README's table) mean the same thing. The
paper's settings (resnet_9blocks, ngf 64, 256x256, 200 epochs) are in `paper()` and in
experiments/configs/; this default shrinks the networks and images so a CPU trains it in
minutes, uses the official `n_layers` PatchGAN with 2 layers instead of 3, and twice the
learning rate (see below). Everything else keeps the official defaults.
"""
import ml_collections


def paper() -> ml_collections.ConfigDict:
    """The official defaults of train.py for CycleGAN (options/*.py, cycle_gan_model.py)."""
    c = ml_collections.ConfigDict()
    c.dataset = "cycle_gan/horse2zebra"
    c.direction = "AtoB"
    c.input_nc = 3
    c.output_nc = 3
    # Networks.
    c.netG = "resnet_9blocks"
    c.netD = "basic"
    c.n_layers_D = 3
    c.ngf = 64
    c.ndf = 64
    c.norm = "instance"
    c.init_type = "normal"
    c.init_gain = 0.02
    c.no_dropout = True
    c.dtype = "float32"  # compute dtype of the networks: float32 or bfloat16
    # Losses.
    c.gan_mode = "lsgan"
    c.lambda_A = 10.0
    c.lambda_B = 10.0
    c.lambda_identity = 0.5
    c.pool_size = 50
    # Optimisation.
    c.lr = 2e-4
    c.beta1 = 0.5
    c.n_epochs = 100
    c.n_epochs_decay = 100
    c.batch_size = 1
    c.seed = 0
    # Data.
    c.load_size = 286
    c.crop_size = 256
    c.preprocess = "resize_and_crop"
    c.no_flip = False
    c.max_dataset_size = 0  # 0: all images
    c.shuffle_buffer = 1000
    c.prefetch = 4
    # Logging and checkpoints (in steps; 0 disables).
    c.log_every = 100
    c.sample_every = 1000
    c.checkpoint_every = 5000
    c.keep_checkpoints = 3
    c.max_steps = 0  # stop early after this many steps (0: the whole schedule)
    c.eval_at_end = True
    return c


def get_config() -> ml_collections.ConfigDict:
    c = paper()
    c.dataset = "embedded"
    c.netG = "resnet_6blocks"
    # A 2-layer PatchGAN (34x34 receptive field) instead of the 3-layer "basic" one (70x70,
    # more than the whole 64x64 image): it judges local texture, and with it the B->A
    # generator learns to remove the stripes within the budget (experiments/embedded).
    c.netD = "n_layers"
    c.n_layers_D = 2
    c.ngf = 16
    c.ndf = 16
    # Twice the official rate: 1,600 steps instead of 200 epochs. On the embedded dataset
    # it brought B->A from 0.66 to 0.47 of the better baseline (seed 0; experiments/embedded).
    c.lr = 4e-4
    c.load_size = 64
    c.crop_size = 64
    c.preprocess = "none"
    c.n_epochs = 1  # 800 steps at the full rate, then 800 decaying to zero
    c.n_epochs_decay = 1
    c.log_every = 100
    c.sample_every = 500
    c.checkpoint_every = 1000
    return c
