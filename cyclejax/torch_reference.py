"""The official CycleGAN in PyTorch: its networks with the official module layout, and one
training iteration in the order of the official `CycleGANModel.optimize_parameters`.

The reference cyclejax must reproduce (the tests) and outrun (`python -m cyclejax.bench
--compare=torch`). The nn.Sequential indices, and so the state-dict keys, are those of
junyanz/pytorch-CycleGAN-and-pix2pix's models/networks.py. Needs torch (`pip install -e ".[torch]"`).
"""
from __future__ import annotations

import torch
from torch import nn


def norm_layer(norm: str):
    if norm == "instance":
        return lambda c: nn.InstanceNorm2d(c, affine=False, track_running_stats=False)
    if norm == "batch":
        return lambda c: nn.BatchNorm2d(c, affine=True, track_running_stats=True)
    return lambda c: nn.Identity()


class ResnetBlock(nn.Module):
    def __init__(self, dim, norm, use_dropout, use_bias):
        super().__init__()
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=use_bias), norm_layer(norm)(dim), nn.ReLU(True)]
        if use_dropout:
            layers += [nn.Dropout(0.5)]
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=use_bias), norm_layer(norm)(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    def __init__(self, input_nc=3, output_nc=3, ngf=64, norm="instance", use_dropout=False, n_blocks=9):
        super().__init__()
        use_bias = norm == "instance"
        nl = norm_layer(norm)
        model = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=use_bias), nl(ngf), nn.ReLU(True)]
        for i in range(2):
            m = 2**i
            model += [nn.Conv2d(ngf * m, ngf * m * 2, 3, stride=2, padding=1, bias=use_bias), nl(ngf * m * 2), nn.ReLU(True)]
        for _ in range(n_blocks):
            model += [ResnetBlock(ngf * 4, norm, use_dropout, use_bias)]
        for i in range(2):
            m = 2 ** (2 - i)
            model += [nn.ConvTranspose2d(ngf * m, ngf * m // 2, 3, stride=2, padding=1, output_padding=1, bias=use_bias),
                      nl(ngf * m // 2), nn.ReLU(True)]
        model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x)


class UnetSkipConnectionBlock(nn.Module):
    def __init__(self, outer_nc, inner_nc, input_nc=None, submodule=None, outermost=False, innermost=False,
                 norm="instance", use_dropout=False):
        super().__init__()
        self.outermost = outermost
        use_bias = norm == "instance"
        nl = norm_layer(norm)
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, 4, stride=2, padding=1, bias=use_bias)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1)
            model = [downconv, submodule, nn.ReLU(True), upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, 4, stride=2, padding=1, bias=use_bias)
            model = [nn.LeakyReLU(0.2, True), downconv, nn.ReLU(True), upconv, nl(outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, 4, stride=2, padding=1, bias=use_bias)
            model = [nn.LeakyReLU(0.2, True), downconv, nl(inner_nc), submodule, nn.ReLU(True), upconv, nl(outer_nc)]
            if use_dropout:
                model += [nn.Dropout(0.5)]
        self.model = nn.Sequential(*model)

    def forward(self, x):
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    def __init__(self, input_nc=3, output_nc=3, num_downs=8, ngf=64, norm="instance", use_dropout=False):
        super().__init__()
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, norm=norm)
        for _ in range(num_downs - 5):
            block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, submodule=block, norm=norm, use_dropout=use_dropout)
        block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, submodule=block, norm=norm)
        block = UnetSkipConnectionBlock(ngf, ngf * 2, submodule=block, norm=norm)
        self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True, norm=norm)

    def forward(self, x):
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    def __init__(self, input_nc=3, ndf=64, n_layers=3, norm="instance"):
        super().__init__()
        use_bias = norm == "instance"
        nl = norm_layer(norm)
        seq = [nn.Conv2d(input_nc, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=use_bias), nl(ndf * mult), nn.LeakyReLU(0.2, True)]
        prev, mult = mult, min(2**n_layers, 8)
        seq += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=use_bias), nl(ndf * mult), nn.LeakyReLU(0.2, True)]
        seq += [nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*seq)

    def forward(self, x):
        return self.model(x)


def init_official(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """The official init_weights('normal', 0.02): conv weights N(0, gain), biases 0, norm scales N(1, gain)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net


def networks(netG: str, netD: str, ngf: int, ndf: int, n_layers_D: int = 3, norm: str = "instance",
             use_dropout: bool = False) -> dict[str, nn.Module]:
    """G_A, G_B, D_A, D_B as the official define_G / define_D build them (resnet_* or unet_*; basic or n_layers)."""
    def generator():
        if netG.startswith("resnet_"):
            return ResnetGenerator(ngf=ngf, norm=norm, use_dropout=use_dropout,
                                   n_blocks=int(netG.removeprefix("resnet_").removesuffix("blocks")))
        return UnetGenerator(num_downs={"unet_128": 7, "unet_256": 8}[netG], ngf=ngf, norm=norm,
                             use_dropout=use_dropout)

    layers = 3 if netD == "basic" else n_layers_D
    return {"G_A": generator(), "G_B": generator(), "D_A": NLayerDiscriminator(ndf=ndf, n_layers=layers, norm=norm),
            "D_B": NLayerDiscriminator(ndf=ndf, n_layers=layers, norm=norm)}


class ImagePool:
    """The official `util/image_pool.ImagePool`. `random` stands for Python's `random` module
    (its `uniform(0, 1)` and `randint(0, pool_size - 1)`, called as the official code calls
    them): a test hands in an object that replays cyclejax's draws."""

    def __init__(self, pool_size: int, random=None):
        import random as python_random

        self.pool_size = pool_size
        self.random = random or python_random
        self.num_imgs = 0
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.pool_size == 0:
            return images
        return_images = []
        for image in images:
            image = torch.unsqueeze(image.data, 0)
            if self.num_imgs < self.pool_size:
                self.num_imgs = self.num_imgs + 1
                self.images.append(image)
                return_images.append(image)
            else:
                p = self.random.uniform(0, 1)
                if p > 0.5:
                    random_id = self.random.randint(0, self.pool_size - 1)
                    tmp = self.images[random_id].clone()
                    self.images[random_id] = image
                    return_images.append(tmp)
                else:
                    return_images.append(image)
        return torch.cat(return_images, 0)


def gradient_penalty(net: nn.Module, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor | None = None,
                     constant: float = 1.0, lambda_gp: float = 10.0) -> torch.Tensor:
    """The official `cal_gradient_penalty(type='mixed')`; `alpha` (one per sample) replaces its
    `torch.rand(N, 1)` so that a test can give it cyclejax's draws."""
    if alpha is None:
        alpha = torch.rand(real.shape[0], 1, dtype=real.dtype, device=real.device)
    alpha = alpha.reshape(real.shape[0], 1).expand(real.shape[0], real.nelement() // real.shape[0])
    alpha = alpha.contiguous().view(*real.shape)
    interpolates = (alpha * real + ((1 - alpha) * fake)).requires_grad_(True)
    disc = net(interpolates)
    gradients = torch.autograd.grad(outputs=disc, inputs=interpolates, grad_outputs=torch.ones_like(disc),
                                    create_graph=True, retain_graph=True, only_inputs=True)[0]
    gradients = gradients.view(real.size(0), -1)
    return (((gradients + 1e-16).norm(2, dim=1) - constant) ** 2).mean() * lambda_gp


def _batch_norm_state(net: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
            for m in net.modules() if isinstance(m, nn.BatchNorm2d)]


def _restore_batch_norm_state(net: nn.Module, saved) -> None:
    for m, (mean, var, count) in zip((m for m in net.modules() if isinstance(m, nn.BatchNorm2d)), saved):
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
        m.num_batches_tracked.copy_(count)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """A loss's input at full precision: float32 from autocast's bfloat16, float64 kept as it is."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


class OfficialIteration:
    """One official training iteration on `nets`, in any dtype the networks and images have.

    `forward`, `backward_G` and `backward_D` are the official methods; `optimize_parameters`
    calls them in the official order: forward both cycles, update G_A and G_B with the
    discriminators frozen, then D_A and D_B on the detached fakes drawn through the image
    pools (`pool_size`; `pool_random` replays a test's draws, see `ImagePool`). `gan_mode`
    as the official GANLoss; with 'wgangp' each discriminator loss gets cyclejax's gradient
    penalty (the official CycleGAN never calls it; docs/faithfulness.md), its interpolation
    weights from `penalty_alpha(name)` where given, and, as cyclejax, the penalty's
    discriminator call leaves batch-norm running statistics alone. `autocast` (a torch
    dtype) runs the networks under torch.autocast, as the official code's `--amp` would.
    """

    def __init__(self, nets: dict[str, nn.Module], lr: float = 2e-4, beta1: float = 0.5, lambda_A: float = 10.0,
                 lambda_B: float = 10.0, lambda_identity: float = 0.5, autocast: torch.dtype | None = None,
                 gan_mode: str = "lsgan", pool_size: int = 0, pool_random=None, penalty_alpha=None):
        self.nets = nets
        self.G = list(nets["G_A"].parameters()) + list(nets["G_B"].parameters())
        self.D = list(nets["D_A"].parameters()) + list(nets["D_B"].parameters())
        self.opt_G = torch.optim.Adam(self.G, lr=lr, betas=(beta1, 0.999))
        self.opt_D = torch.optim.Adam(self.D, lr=lr, betas=(beta1, 0.999))
        self.lambda_A, self.lambda_B, self.lambda_identity = lambda_A, lambda_B, lambda_identity
        self.autocast = autocast
        self.gan_mode = gan_mode
        if gan_mode not in ("lsgan", "vanilla", "wgangp"):
            raise ValueError(f"gan_mode must be lsgan, vanilla or wgangp, got {gan_mode!r}")
        self.fake_A_pool = ImagePool(pool_size, pool_random and pool_random("A"))
        self.fake_B_pool = ImagePool(pool_size, pool_random and pool_random("B"))
        self.penalty_alpha = penalty_alpha
        self.l1 = nn.L1Loss()
        self.loss: dict[str, torch.Tensor] = {}

    def _amp(self):
        if self.autocast is None:
            return torch.autocast("cpu", enabled=False)
        return torch.autocast("cuda" if self.real_A.is_cuda else "cpu", dtype=self.autocast)

    def set_input(self, real_A: torch.Tensor, real_B: torch.Tensor) -> None:
        self.real_A, self.real_B = real_A, real_B

    def forward(self) -> None:
        with self._amp():
            self.fake_B = self.nets["G_A"](self.real_A)
            self.rec_A = self.nets["G_B"](self.fake_B)
            self.fake_A = self.nets["G_B"](self.real_B)
            self.rec_B = self.nets["G_A"](self.fake_A)

    def _gan(self, pred: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        """The official `GANLoss(gan_mode)(pred, target_is_real)`."""
        pred = _wide(pred)
        if self.gan_mode == "wgangp":
            return -pred.mean() if target_is_real else pred.mean()
        target = torch.ones_like(pred) if target_is_real else torch.zeros_like(pred)
        if self.gan_mode == "lsgan":
            return nn.functional.mse_loss(pred, target)
        return nn.functional.binary_cross_entropy_with_logits(pred, target)

    def backward_G(self) -> None:
        n, lA, lB, li = self.nets, self.lambda_A, self.lambda_B, self.lambda_identity
        if li > 0:
            with self._amp():
                idt_A, idt_B = n["G_A"](self.real_B), n["G_B"](self.real_A)
            self.loss["idt_A"] = self.l1(_wide(idt_A), self.real_B) * lB * li
            self.loss["idt_B"] = self.l1(_wide(idt_B), self.real_A) * lA * li
        else:
            self.loss["idt_A"] = self.loss["idt_B"] = torch.zeros((), dtype=self.real_A.dtype)
        with self._amp():
            pred_A, pred_B = n["D_A"](self.fake_B), n["D_B"](self.fake_A)
        self.loss["G_A"] = self._gan(pred_A, True)
        self.loss["G_B"] = self._gan(pred_B, True)
        self.loss["cycle_A"] = self.l1(_wide(self.rec_A), self.real_A) * lA
        self.loss["cycle_B"] = self.l1(_wide(self.rec_B), self.real_B) * lB
        sum(self.loss[k] for k in ("G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B")).backward()

    def backward_D(self) -> None:
        fake_B = self.fake_B_pool.query(self.fake_B)
        fake_A = self.fake_A_pool.query(self.fake_A)
        for name, real, fake in (("D_A", self.real_B, fake_B), ("D_B", self.real_A, fake_A)):
            net = self.nets[name]
            with self._amp():
                p_real, p_fake = net(real), net(fake.detach())
            self.loss[name] = 0.5 * (self._gan(p_real, True) + self._gan(p_fake, False))
            if self.gan_mode == "wgangp":
                saved = _batch_norm_state(net)
                alpha = self.penalty_alpha(name) if self.penalty_alpha else None
                with self._amp():
                    self.loss[name] = self.loss[name] + gradient_penalty(net, real, fake.detach(), alpha)
                _restore_batch_norm_state(net, saved)
            self.loss[name].backward()

    def set_requires_grad(self, params, flag: bool) -> None:
        for p in params:
            p.requires_grad_(flag)

    def optimize_parameters(self) -> dict[str, float]:
        self.forward()
        self.set_requires_grad(self.D, False)
        self.opt_G.zero_grad()
        self.backward_G()
        self.opt_G.step()
        self.set_requires_grad(self.D, True)
        self.opt_D.zero_grad()
        self.backward_D()
        self.opt_D.step()
        return {k: float(v.detach()) for k, v in self.loss.items()}


def time_iterations(netG: str, netD: str, size: int, batch: int, dtype: str, ngf: int, ndf: int,
                    steps: int, warmup: int) -> dict:
    """Seconds per `OfficialIteration` at these sizes on random images (median of `steps`, after
    `warmup`), one torch thread per CPU this process may use; bfloat16 under torch.autocast."""
    import os
    import statistics
    import time

    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # As the official BaseModel does for every preprocess but scale_width (fixed image sizes):
    # cuDNN times its algorithms on the first (warm-up) iterations and keeps the fastest.
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    nets = {k: init_official(v).to(device) for k, v in networks(netG, netD, ngf, ndf).items()}
    it = OfficialIteration(nets, autocast=torch.bfloat16 if dtype == "bfloat16" else None)
    g = torch.Generator().manual_seed(0)
    it.set_input((torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device),
                 (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(warmup):
        it.optimize_parameters()
    times = []
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        it.optimize_parameters()  # its float() of each loss also waits for the device
        sync()
        times.append(time.perf_counter() - t0)
    return {"torch_s_per_step": statistics.median(times), "torch_step_times": times, "torch_threads": threads,
            "torch_device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "torch_version": torch.__version__, "torch_peak_rss_mb": _peak_rss_mb(),
            "torch_peak_device_memory_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None}


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: ru_maxrss would also count the parent's, kept across fork and exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
