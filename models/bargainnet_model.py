"""BargainNet: the generator and the domain code extractor wired together, with their losses."""
from __future__ import annotations

import argparse
import contextlib
import logging
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import networks, prepack
from .base_model import BaseModel

logger = logging.getLogger(__name__)


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
    Adam optimizers (G at lr·g_lr_ratio, E at lr·e_lr_ratio). Testing computes only the background code of
    the composite and the harmonized image. Without ``--eval`` BatchNorm normalizes each image with its own
    statistics and dropout draws per-image masks from ``--seed`` and the image's index, so results are the
    released protocol's and do not depend on ``--batch_size``.
    """

    @staticmethod
    def modify_commandline_options(parser: argparse.ArgumentParser, is_train: bool) -> argparse.ArgumentParser:
        parser.set_defaults(norm='batch', netG='s2ad', dataset_mode='iharmony4')
        g = parser.add_argument_group('bargainnet')
        g.add_argument('--triplet_distance', type=str, default='channelwise', choices=('channelwise', 'euclidean'),
                       help='channelwise: what the released code computes; euclidean: the paper\'s equations')
        g.add_argument('--lambda_tri', type=float, default=0.01, help='weight of the triplet losses')
        g.add_argument('--lambda_f2b', type=float, default=1.0, help='weight of T(ẑ_f, z_b, z̃_f)')
        g.add_argument('--lambda_ff2', type=float, default=1.0, help='weight of T(z_f, ẑ_f, z̃_f)')
        g.add_argument('--margin', type=float, default=0.1, help='triplet margin')
        g.add_argument('--g_lr_ratio', type=float, default=1.0, help='generator lr = lr * g_lr_ratio')
        g.add_argument('--e_lr_ratio', type=float, default=1.0, help='extractor lr = lr * e_lr_ratio')
        return parser

    def __init__(self, opt: argparse.Namespace) -> None:
        super().__init__(opt)
        self.loss_names = ['L1', 'tri']
        self.visual_names = ['comp', 'real', 'harm', 'mask']
        netG = networks.define_G(opt.input_nc, opt.output_nc, opt.ngf, opt.netG, opt.norm, not opt.no_dropout,
                                 opt.style_dim, opt.init_type, opt.init_gain)
        netE = networks.define_E(opt.style_dim, opt.ndf, opt.norm, opt.init_type, opt.init_gain)
        self.nets = {'G': netG.to(self.device), 'E': netE.to(self.device)}
        self.memory_format = torch.channels_last if opt.channels_last else torch.contiguous_format
        if opt.channels_last:
            for net in self.nets.values():
                net.to(memory_format=torch.channels_last)
        self.step_module: nn.Module = BargainNetStep(netG, netE)
        self.amp_dtype = {'none': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}[opt.amp]
        self.scaler: Optional[torch.amp.GradScaler] = None
        self.per_sample = False
        if self.is_train:
            betas = (opt.beta1, 0.999)
            self.optimizer_G = torch.optim.Adam(netG.parameters(), lr=opt.lr * opt.g_lr_ratio, betas=betas)
            self.optimizer_E = torch.optim.Adam(netE.parameters(), lr=opt.lr * opt.e_lr_ratio, betas=betas)
            self.optimizers = [self.optimizer_G, self.optimizer_E]
            if opt.amp == 'fp16':
                self.scaler = torch.amp.GradScaler(self.device.type)

    # ----------------------------------------------------------------- setup
    def setup(self) -> None:
        """Load weights as needed, then choose the normalization mode and wrap for DDP / compile."""
        super().setup()
        opt = self.opt
        if self.is_train:
            self.train()
        elif opt.eval:
            self.eval()
        else:
            # the released test: training-mode BatchNorm on single images and active dropout
            self.train()
            self.per_sample = True
        if torch.distributed.is_available() and torch.distributed.is_initialized() and self.is_train:
            ids = [self.device.index] if self.device.type == 'cuda' else None
            self.step_module = nn.parallel.DistributedDataParallel(self.step_module, device_ids=ids)
        if (not self.is_train and self.device.type == 'cpu' and not getattr(opt, 'no_prepack', False)
                and not opt.compile and self.amp_dtype is None):
            # bit-identical outputs; the weights are reordered once instead of on every call
            n = {k: prepack.prepack(self.nets[k]) for k in ('G', 'E')}
            logger.debug('convolutions run with prepacked oneDNN weights: %d of G, %d of E', n['G'], n['E'])
        if opt.compile:
            self.step_module = torch.compile(self.step_module)
            self.test_G = torch.compile(self.nets['G'])
            self.test_E = torch.compile(self.nets['E'])

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # ----------------------------------------------------------------- data
    def set_input(self, batch: dict[str, Any]) -> None:
        """Take ``comp``, ``real``, ``mask`` (and ``comp_path``, ``index``) from a batch of the loader."""
        non_blocking = self.device.type == 'cuda'
        mf = self.memory_format
        self.comp = batch['comp'].to(self.device, non_blocking=non_blocking, memory_format=mf)
        self.mask = batch['mask'].to(self.device, non_blocking=non_blocking, memory_format=mf)
        self.real = batch['real'].to(self.device, non_blocking=non_blocking, memory_format=mf) \
            if 'real' in batch else None
        self.image_paths = list(batch.get('comp_path', []))
        index = batch.get('index')
        if index is None:
            index = torch.arange(self.comp.shape[0])
        self.sample_seeds = [(int(self.opt.seed) << 32) + int(i) for i in index]

    # ----------------------------------------------------------------- training
    def forward(self) -> None:
        """The training forward: G's output and the four codes of SPEC §3."""
        with self.autocast():
            self.harm, self.z_b, self.z_f, self.z_hf, self.z_cf = self.step_module(self.comp, self.real, self.mask)

    def compute_losses(self) -> torch.Tensor:
        """L1 + weighted triplets (SPEC §3), in float32 whatever --amp computed the forward in."""
        opt = self.opt
        self.loss_L1 = F.l1_loss(self.harm.float(), self.real.float())
        z_b, z_f, z_hf, z_cf = (z.float() for z in (self.z_b, self.z_f, self.z_hf, self.z_cf))
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
            for optimizer in self.optimizers:
                self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            for optimizer in self.optimizers:
                optimizer.step()

    # ----------------------------------------------------------------- testing
    def harmonize(self, comp: torch.Tensor, mask: torch.Tensor,
                  sample_seeds: Optional[list[int]] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Harmonize ``comp`` (B,3,H,W in [-1,1]) inside ``mask`` (B,1,H,W); return (image, background code).

        Only what evaluation needs: one extractor pass for the background code, one generator pass.
        """
        netG = getattr(self, 'test_G', self.nets['G'])
        netE = getattr(self, 'test_E', self.nets['E'])
        if self.per_sample:
            seeds = sample_seeds if sample_seeds is not None else list(range(comp.shape[0]))
            for net in self.nets.values():
                networks.set_per_sample(net, True, seeds)
        try:
            with torch.inference_mode(), self.autocast():
                z_b = netE(comp, 1 - mask)
                harm = netG(comp, mask, z_b)
        finally:
            if self.per_sample:
                for net in self.nets.values():
                    networks.set_per_sample(net, False)
        return harm.float(), z_b.float()

    def test(self) -> None:
        """Evaluation forward (``--invert_mask`` harmonizes the background to the foreground)."""
        mask = 1 - self.mask if getattr(self.opt, 'invert_mask', False) else self.mask
        self.harm, self.z_b = self.harmonize(self.comp, mask, self.sample_seeds)
