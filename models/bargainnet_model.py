"""BargainNet: the generator and the domain code extractor wired together, with their losses."""
from __future__ import annotations

import argparse
import contextlib
import logging
from typing import Any, Iterator, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from util.image import to_unit_range

from . import networks
from .base_model import BaseModel
from .factory import Architecture, create_networks

logger = logging.getLogger(__name__)

PROTOCOLS = ('released', 'deploy')


@contextlib.contextmanager
def test_mode(nets: Sequence[nn.Module], per_image: bool, seeds: Optional[Sequence[int]] = None) -> Iterator[None]:
    """Networks set for a test forward, restored afterwards.

    ``per_image``: the released test (no ``--eval``): training-mode BatchNorm with each image's own statistics
    (what it computes on a batch of one) and dropout with a mask drawn from each image's seed; running
    statistics untouched. Otherwise eval mode: running statistics, no dropout.
    """
    was_training = [net.training for net in nets]
    norms = [m for net in nets for m in net.modules() if isinstance(m, networks.SampleBatchNorm2d)]
    drops = [m for net in nets for m in net.modules() if isinstance(m, networks.SampleDropout)]
    saved = [(m.per_sample, m.update_stats) for m in norms], [m.sample_seeds for m in drops]
    for net in nets:
        net.train(per_image)
        networks.set_per_sample(net, per_image, list(seeds) if per_image and seeds is not None else None)
    try:
        yield
    finally:  # training settings (--per_image_norm) come back as they were
        for net, training in zip(nets, was_training):
            net.train(training)
        for m, (per_sample, update_stats) in zip(norms, saved[0]):
            m.per_sample, m.update_stats = per_sample, update_stats
        for m, sample_seeds in zip(drops, saved[1]):
            m.sample_seeds = sample_seeds


def harmonize(netG: nn.Module, netE: nn.Module, comp: torch.Tensor, mask: torch.Tensor, code_image: torch.Tensor,
              per_image: bool, seeds: Optional[Sequence[int]] = None,
              autocast: Optional[contextlib.AbstractContextManager] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The one test-time forward: z_b = E(code_image, 1 − mask), harm = G(comp, mask, z_b).

    Args:
        netG, netE: the generator and the extractor.
        comp: (B,3,H,W) composites in [-1, 1], sides multiples of 256.
        mask: (B,1,H,W) in {0, 1}: the region to harmonize.
        code_image: the image the background code is read from: the real image in the released protocol
            (whose background equals the composite's), the composite itself in deployment.
        per_image: BatchNorm with each image's statistics and dropout active (see :func:`test_mode`);
            False: running statistics, no dropout (``--eval``).
        seeds: one dropout seed per image (default 0, 1, ...).
        autocast: a mixed-precision context, or None.

    Returns:
        The harmonized images and the background codes, float32.
    """
    seeds = list(range(comp.shape[0])) if seeds is None else seeds
    with test_mode((netG, netE), per_image, seeds), torch.inference_mode(), autocast or contextlib.nullcontext():
        z_b = netE(code_image, 1 - mask)
        harm = netG(comp, mask, z_b)
    return harm.float(), z_b.float()


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(torch.float32, t.dtype))


class BargainNetStep(nn.Module):
    """One training forward of BargainNet as a single module, so that DDP sees one forward per backward.

    Codes: z_b = E(real, 1−M), z_f = E(real, M), ẑ_f = E(harm, M), z̃_f = E(comp, M) with
    harm = G(comp, M, z_b). The background code comes from the real image: its background equals the
    composite's.
    """

    def __init__(self, netG: nn.Module, netE: nn.Module) -> None:
        super().__init__()
        self.netG = netG
        self.netE = netE

    def forward(self, comp: torch.Tensor, real: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z_b = self.netE(real, 1 - mask)
        z_f = self.netE(real, mask)
        harm = self.netG(comp, mask, z_b)
        z_hf = self.netE(harm, mask)
        z_cf = self.netE(comp, mask)
        return harm, z_b, z_f, z_hf, z_cf


class BargainNetModel(BaseModel):
    """Background-guided domain translation (Cong et al., ICME 2021).

    Training minimizes L1(harm, real) + λ_tri·(λ_ff2·T(z_f, ẑ_f, z̃_f) + λ_f2b·T(ẑ_f, z_b, z̃_f)) with two
    Adam optimizers (G at lr·g_lr_ratio, E at lr·e_lr_ratio). With ``--per_image_norm`` every image is
    normalized by its own statistics, as at the released batch size 1, so that the gradient of a batch of B is
    the mean of the B batch-1 gradients. Testing runs :func:`harmonize` (``--protocol`` chooses where the
    background code comes from; without ``--eval`` each image uses its own statistics, the released protocol).
    """

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        parser.set_defaults(norm='batch', netG='s2ad', dataset_mode='iharmony4')
        g = parser.add_argument_group('bargainnet')
        if is_train:
            g.add_argument('--triplet_distance', type=str, default='channelwise', choices=('channelwise', 'euclidean'),
                           help="channelwise: what the released code computes; euclidean: the paper's equations")
            g.add_argument('--lambda_tri', type=float, default=0.01, help='weight of the triplet losses')
            g.add_argument('--lambda_f2b', type=float, default=1.0, help='weight of T(ẑ_f, z_b, z̃_f)')
            g.add_argument('--lambda_ff2', type=float, default=1.0, help='weight of T(z_f, ẑ_f, z̃_f)')
            g.add_argument('--margin', type=float, default=0.1, help='triplet margin')
            g.add_argument('--g_lr_ratio', type=float, default=1.0, help='generator lr = lr * g_lr_ratio')
            g.add_argument('--e_lr_ratio', type=float, default=1.0, help='extractor lr = lr * e_lr_ratio')
            g.add_argument('--per_image_norm', action='store_true',
                           help='normalize every image by its own statistics (BatchNorm as at batch size 1): the '
                                'gradient of a batch of B is the mean of the B batch-1 gradients; test it without '
                                '--eval')
            g.add_argument('--fused_adam', action='store_true', help='fused Adam kernels (faster on GPUs)')
            g.add_argument('--lr_warmup', type=int, default=0,
                           help='iterations over which the learning rate rises linearly from lr/N to lr (0: none)')
        else:
            g.add_argument('--protocol', type=str, default='released', choices=PROTOCOLS,
                           help='released: the background code from the real image, as the released test did; '
                                'deploy: from the composite (the real image is never seen)')
            g.add_argument('--invert_mask', action='store_true',
                           help='background harmonization: feed the inverted mask to G and E')
        return parser

    def __init__(self, opt: argparse.Namespace) -> None:
        super().__init__(opt)
        self.loss_names = ['L1', 'tri']
        self.visual_names = ['comp', 'real', 'harm', 'mask']
        netG, netE = create_networks(Architecture.from_options(opt), opt.init_type, opt.init_gain)
        self.nets = {'G': netG.to(self.device), 'E': netE.to(self.device)}
        self.memory_format = torch.channels_last if opt.channels_last else torch.contiguous_format
        if opt.channels_last:
            for net in self.nets.values():
                net.to(memory_format=torch.channels_last)
        self.step_module: nn.Module = BargainNetStep(netG, netE)
        self.test_nets: tuple[nn.Module, nn.Module] = (netG, netE)
        self.amp_dtype = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[opt.amp]
        self.scaler: Optional[torch.amp.GradScaler] = None
        if self.is_train:
            betas = (opt.beta1, 0.999)
            fused = True if opt.fused_adam else None
            self.optimizer_G = torch.optim.Adam(netG.parameters(), lr=opt.lr * opt.g_lr_ratio, betas=betas, fused=fused)
            self.optimizer_E = torch.optim.Adam(netE.parameters(), lr=opt.lr * opt.e_lr_ratio, betas=betas, fused=fused)
            self.optimizers = [self.optimizer_G, self.optimizer_E]
            if opt.amp == 'fp16':
                self.scaler = torch.amp.GradScaler(self.device.type)
        else:
            self.per_image = not opt.eval
            self.code_from = 'real' if opt.protocol == 'released' else 'comp'
            self.invert_mask = opt.invert_mask

    # ----------------------------------------------------------------- setup
    def setup(self) -> None:
        """Load weights as needed, then set the normalization mode and wrap for DDP / compile."""
        super().setup()
        opt = self.opt
        if self.is_train:
            self.train()
            if opt.per_image_norm:
                for net in self.nets.values():
                    networks.set_per_sample(net, True, update_stats=True)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                ids = [self.device.index] if self.device.type == 'cuda' else None
                self.step_module = nn.parallel.DistributedDataParallel(self.step_module, device_ids=ids)
        if opt.compile:
            self.step_module = torch.compile(self.step_module)
            self.test_nets = (torch.compile(self.nets['G']), torch.compile(self.nets['E']))

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # ----------------------------------------------------------------- data
    def set_input(self, batch: dict[str, Any]) -> None:
        """Take ``comp``, ``real``, ``mask`` (and ``comp_path``, ``index``) from a batch of the loader.

        The loader's uint8 images and masks move to the device as they are and become floats there (images
        scaled to [-1, 1] by ``to_unit_range``); floating-point tensors are taken as already in [-1, 1] and {0, 1}.
        """
        self.comp = self._on_device(batch['comp'], image=True)
        self.mask = self._on_device(batch['mask'], image=False)
        self.real = self._on_device(batch['real'], image=True) if 'real' in batch else None
        self.image_paths = list(batch.get('comp_path', []))
        index = batch.get('index')
        if index is None:
            index = torch.arange(self.comp.shape[0])
        self.sample_seeds = [(int(self.opt.seed) << 32) + int(i) for i in index]

    def _on_device(self, x: torch.Tensor, image: bool) -> torch.Tensor:
        x = x.to(self.device, non_blocking=self.device.type == 'cuda')
        if not x.is_floating_point():
            x = to_unit_range(x) if image else x.float()
        return x.contiguous(memory_format=self.memory_format)

    # ----------------------------------------------------------------- training
    def forward(self) -> None:
        """The training forward: G's output and the four codes."""
        with self.autocast():
            self.harm, self.z_b, self.z_f, self.z_hf, self.z_cf = self.step_module(self.comp, self.real, self.mask)

    def compute_losses(self) -> torch.Tensor:
        """L1 + weighted triplets, in float32 whatever --amp computed the forward in."""
        opt = self.opt
        harm, real, z_b, z_f, z_hf, z_cf = (_at_least_float32(t) for t in (self.harm, self.real, self.z_b, self.z_f,
                                                                            self.z_hf, self.z_cf))
        self.loss_L1 = F.l1_loss(harm, real)
        t_ff2 = networks.triplet_loss(z_f, z_hf, z_cf, opt.margin, opt.triplet_distance)
        t_f2b = networks.triplet_loss(z_hf, z_b, z_cf, opt.margin, opt.triplet_distance)
        self.loss_tri = opt.lambda_tri * (opt.lambda_ff2 * t_ff2 + opt.lambda_f2b * t_f2b)
        self.loss_total = self.loss_L1 + self.loss_tri
        return self.loss_total

    def optimize_parameters(self) -> None:
        """One iteration: forward, both losses, backward, a step of both optimizers."""
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        self.forward()
        loss = self.compute_losses()
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            with self.warmup():
                for optimizer in self.optimizers:
                    self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            with self.warmup():
                for optimizer in self.optimizers:
                    optimizer.step()

    @contextlib.contextmanager
    def warmup(self) -> Iterator[None]:
        """During the first ``--lr_warmup`` steps, step with the learning rate scaled by (step + 1) / lr_warmup.

        The step count is Adam's own (saved with the optimizer), so a resumed run warms up exactly as an
        uninterrupted one; the scheduled learning rate is restored right after the step.
        """
        n = self.opt.lr_warmup
        done = self.optimizers[0].state.get(self.optimizers[0].param_groups[0]['params'][0], {}).get('step', 0)
        factor = min(1.0, (int(done) + 1) / n) if n > 0 else 1.0
        if factor >= 1.0:
            yield
            return
        saved = [[group['lr'] for group in o.param_groups] for o in self.optimizers]
        for o in self.optimizers:
            for group in o.param_groups:
                group['lr'] = group['lr'] * factor
        try:
            yield
        finally:
            for o, lrs in zip(self.optimizers, saved):
                for group, lr in zip(o.param_groups, lrs):
                    group['lr'] = lr

    # ----------------------------------------------------------------- testing
    def test(self) -> None:
        """The evaluation forward (:func:`harmonize`); ``--invert_mask`` harmonizes the background instead."""
        mask = 1 - self.mask if self.invert_mask else self.mask
        if self.code_from == 'real' and self.real is None:
            raise ValueError('the released protocol reads the background code from the real image, which this '
                             'batch lacks: use --protocol deploy')
        code_image = self.real if self.code_from == 'real' else self.comp
        self.harm, self.z_b = harmonize(*self.test_nets, self.comp, mask, code_image, self.per_image,
                                        self.sample_seeds, self.autocast())
