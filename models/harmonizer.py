"""Harmonization of a composite at its own resolution: this project's extension, not part of the released code.

The released code harmonizes 256×256 images only. :class:`Harmonizer` runs BargainNet at 256×256 through the one
test forward (:func:`models.bargainnet_model.harmonize`, the background code read from the composite itself) and
carries the colour change it makes back to the original pixels with colour transforms fitted on a grid of cells
(see :meth:`Harmonizer.harmonize`), rather than adding the network's per-pixel difference, upsampled, which would
carry G's reconstruction error and its blur to every pixel of the region.
"""
from __future__ import annotations

import logging
import os
from typing import Optional, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from util.pairs import ImageInput, describe, inverted, net_mask, read_pair, resize_to_net

from .bargainnet_model import harmonize as test_forward
from .factory import load_bargainnet, model_defaults
from .harmony_score import HarmonyScorer, image_tensor

logger = logging.getLogger(__name__)

MODES = ('foreground', 'background')
DEFAULT_GRID = 8  # cells per side of the grid of colour transforms
PIXEL_CHUNK = 1 << 20  # full-resolution pixels changed at a time

Device = Union[str, torch.device]


# ----------------------------------------------------------------------------------------------- colour transforms
def _solve_ridge(a: torch.Tensor, b: torch.Tensor, prior: torch.Tensor, lam: float) -> torch.Tensor:
    """argmin_M of the least squares whose normal equations are ``a M = b``, plus ``lam``·‖M − prior‖²."""
    return torch.linalg.solve(a + lam * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device), b + lam * prior)


def fit_colour_transform(src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor,
                         ridge: float = 1e-3) -> torch.Tensor:
    """The 4×3 matrix M of weighted least squares ``dst ≈ [src, 1] @ M`` (pixels as rows, weights ``weight``).

    M is pulled by ``ridge``·Σweight towards per-channel gains and offsets, themselves fitted channel by channel
    and pulled towards no change. The colours of a region often lie close to a line or a plane, which leaves the
    full transform undetermined off it, where the sharper full-resolution pixels lie; there the prior makes it
    a per-channel change (white balance, exposure), and a flat region gets a shift of its colour.
    """
    x = torch.cat([src, torch.ones_like(src[:, :1])], 1).double()
    y = dst.double()
    w = weight.double().reshape(-1, 1)
    lam = ridge * float(w.sum())
    no_change = torch.tensor([[1.0], [0.0]], dtype=x.dtype, device=x.device)
    per_channel = torch.zeros(4, 3, dtype=x.dtype, device=x.device)
    for c in range(3):
        xc = x[:, [c, 3]]
        gain, offset = _solve_ridge(xc.T @ (w * xc), xc.T @ (w * y[:, c:c + 1]), no_change, lam)[:, 0]
        per_channel[c, c], per_channel[3, c] = gain, offset
    return _solve_ridge(x.T @ (w * x), x.T @ (w * y), per_channel, lam)


def _tent(nodes: int, length: int, device: torch.device) -> torch.Tensor:
    """(nodes, length) bilinear weights of pixel centres to ``nodes`` evenly spread from the first pixel's outer
    edge to the last one's; each pixel's weights sum to 1."""
    u = (torch.arange(length, device=device, dtype=torch.float64) + 0.5) / length * (nodes - 1)
    return (1 - (u[None] - torch.arange(nodes, device=device, dtype=torch.float64)[:, None]).abs()).clamp_min(0)


def fit_local_transforms(src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor, grid: int,
                         ridge: float = 1e-2) -> torch.Tensor:
    """Colour transforms (4×3, as :func:`fit_colour_transform`) on the (grid+1)² nodes of a grid of cells.

    Each node's transform is fitted to the pixels around it, weighted by ``weight`` and by the bilinear weights
    that later interpolate the transforms between nodes, and pulled towards the transform of the whole region by
    ``ridge``·(pixels per cell): a node that sees few pixels, or pixels of one colour, takes the global transform.

    Args:
        src, dst: (3, h, w) images; weight: (h, w). Returns (grid+1, grid+1, 4, 3) float64.
    """
    h, w = weight.shape
    x = torch.cat([src, torch.ones_like(src[:1])]).double()
    glob = fit_colour_transform(x[:3].flatten(1).T, dst.flatten(1).T, weight.flatten())
    xw = x * weight.double()
    wy, wx = _tent(grid + 1, h, x.device), _tent(grid + 1, w, x.device)
    # per-pixel normal equations (i, j, y, x), summed over each node's bilinear window: wy @ . @ wx^T
    a = (wy @ (xw[:, None] * x[None]) @ wx.T).permute(2, 3, 0, 1)
    b = (wy @ (xw[:, None] * dst.double()[None]) @ wx.T).permute(2, 3, 0, 1)
    lam = ridge * (h / grid) * (w / grid)
    return _solve_ridge(a, b, glob, lam)


def _sample(field: torch.Tensor, ys: np.ndarray, xs: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear samples (K, C) of ``field`` (1, C, n, m), whose corner nodes sit on the image's outer corners, at
    pixels (ys, xs) of an image of ``size`` (H, W), without building the whole H×W field."""
    h, w = size
    y = torch.from_numpy(ys).to(field.device, field.dtype)
    x = torch.from_numpy(xs).to(field.device, field.dtype)
    grid = torch.stack([2 * (x + 0.5) / w - 1, 2 * (y + 0.5) / h - 1], -1)[None, None]
    return F.grid_sample(field, grid, mode='bilinear', padding_mode='border', align_corners=True)[0, :, 0].T


# ----------------------------------------------------------------------------------------------- the harmonizer
class Harmonizer:
    """BargainNet on composites of any size: the network at 256×256, its colour change carried to full resolution.

    ``per_image=True`` is the released test behaviour: BatchNorm with each image's own statistics and active
    dropout, its masks drawn from ``seed`` (the same seed for every image, so a result depends on that image
    alone); ``per_image=False`` is test.py's ``--eval``: running statistics and no dropout.
    """

    def __init__(self, netG: nn.Module, netE: nn.Module, device: Optional[Device] = None, per_image: bool = True,
                 seed: int = 0) -> None:
        self.netG, self.netE = netG, netE
        self.device = torch.device(device) if device is not None else next(netG.parameters()).device
        self.per_image = per_image
        self.seed = seed
        self.scorer = HarmonyScorer(netE, self.device)  # the same E, in eval mode while scoring

    @classmethod
    def from_checkpoints(cls, checkpoints_dir: str, name: str, epoch: str = 'latest', device: Device = 'cpu',
                         ngf: Optional[int] = None, ndf: Optional[int] = None, style_dim: Optional[int] = None,
                         no_dropout: Optional[bool] = None, eval_mode: Optional[bool] = None,
                         seed: int = 0) -> 'Harmonizer':
        """A harmonizer with the networks of ``<checkpoints_dir>/<name>/<epoch>_net_{G,E}.pth``.

        Settings left at None come from the model's folder, as test.py takes them
        (:func:`models.factory.model_defaults`): the widths from the weights, ``no_dropout`` and ``eval_mode``
        from its ``train_opt.txt`` (``eval_mode`` True = running statistics, for a model trained with batch
        normalization over batches of several images); without ``train_opt.txt``, dropout and per-image
        statistics, the released test behaviour. One info line says what came from the folder.
        """
        folder = os.path.join(checkpoints_dir, name)
        netG, netE, arch = load_bargainnet(folder, epoch, device, ngf=ngf, ndf=ndf, style_dim=style_dim,
                                           no_dropout=no_dropout)
        trained = model_defaults(folder, {})  # no_dropout, norm and eval from train_opt.txt
        widths = {'ngf': ngf, 'ndf': ndf, 'style_dim': style_dim}
        used = {key: getattr(arch, key) for key, given in widths.items() if given is None}
        used.update({key: trained[key] for key in ('norm', 'no_dropout') if key in trained})
        if no_dropout is not None:
            used.pop('no_dropout', None)
        if eval_mode is None:
            eval_mode = trained.get('eval', False)
            if 'eval' in trained:
                used['eval'] = eval_mode
        logger.info('settings of the model in %s: %s (command-line flags win)', folder,
                    ', '.join(f'{k} {v}' for k, v in used.items()) or 'none')
        return cls(netG, netE, device, per_image=not eval_mode, seed=seed)

    def run_network(self, comp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """G(comp, mask, E(comp, 1 − mask)) at 256×256 through the one test forward (background code from comp).

        Args:
            comp: (B,3,H,W) in [-1, 1], sides multiples of 256.
            mask: (B,1,H,W) in {0, 1}, the region to harmonize.
        """
        harm, _ = test_forward(self.netG, self.netE, comp, mask, comp, self.per_image, [self.seed] * comp.shape[0])
        return harm

    def harmonize(self, image: ImageInput, mask: ImageInput, mode: str = 'foreground',
                  grid: int = DEFAULT_GRID) -> np.ndarray:
        """Harmonize a composite at its own size; return a uint8 H×W×3 array.

        The composite and the mask are resized to 256×256 (PIL bilinear, as for the score, so that a large photo
        is averaged rather than point-sampled); G gets the usable-mask rule's foreground
        (:func:`util.pairs.net_mask`: resized mask >= 128) as the region, or its complement in ``background``
        mode (the background is harmonized to the foreground), and the code of the rest of the composite.

        The change G makes is learnt from the 256×256 pixels resized from the region alone (resized region 255:
        they saw no pixel of the other region; a region too thin for any uses its soft coverage instead), never
        from the boundary pixels, whose colour is part background. Colour transforms ``[r, g, b, 1] @ M`` (4×3)
        are fitted by least squares to (comp, harm) on a ``grid``×``grid`` grid of cells, bilinearly
        interpolated between the grid nodes and applied to each original pixel (guided upsampling): fine detail
        keeps its contrast, no high-frequency artefact of G reaches the result, and the grid follows changes that
        vary across the region; ``grid=1``: one transform for the whole region. A pixel of weight w becomes
        ``round(pixel + w·change)``, with w = mask/255 in ``foreground`` mode, so that pixels where the mask is 0
        are exactly unchanged, and (255 − mask)/255 in ``background`` mode, so that pixels where it is 255 are.

        Raises:
            ValueError: a mask of another size than the image, or one that is not usable.
        """
        if mode not in MODES:
            raise ValueError(f'mode [{mode}] is not known; choose {" or ".join(MODES)}')
        if grid < 1:
            raise ValueError(f'grid {grid}: a grid needs at least 1 cell per side')
        img, msk = read_pair(image, mask)
        fg = net_mask(msk, describe(mask, 'mask'))
        region = msk if mode == 'foreground' else inverted(msk)
        hard = torch.from_numpy(fg if mode == 'foreground' else ~fg).float()[None, None].to(self.device)
        soft = TF.to_tensor(resize_to_net(region))[None].to(self.device)
        comp = image_tensor(resize_to_net(img))[None].to(self.device)
        harm = self.run_network(comp, hard)
        known = (soft >= 1).float() if (soft >= 1).any() else soft * hard
        if grid == 1:
            transform = fit_colour_transform(comp[0].flatten(1).T, harm[0].flatten(1).T, known.flatten())
        else:  # (1, 12, grid+1, grid+1): the 4×3 transforms of the grid's nodes, as channels
            nodes = fit_local_transforms(comp[0], harm[0], known[0, 0], grid).flatten(2).permute(2, 0, 1)[None]

        out = np.array(img)
        weight = np.asarray(region, dtype=np.float32) / 255
        all_ys, all_xs = np.nonzero(weight)
        for start in range(0, len(all_ys), PIXEL_CHUNK):  # bounded memory for photos of any size
            ys, xs = all_ys[start:start + PIXEL_CHUNK], all_xs[start:start + PIXEL_CHUNK]
            pixels = out[ys, xs].astype(np.float32)
            m = transform if grid == 1 else _sample(nodes, ys, xs, out.shape[:2]).reshape(-1, 4, 3)
            src = torch.from_numpy(pixels).to(self.device, torch.float64) / 127.5 - 1
            new = (torch.cat([src, torch.ones_like(src[:, :1])], 1)[:, None] @ m)[:, 0]
            change = ((new - src) * 127.5).float().cpu().numpy()
            out[ys, xs] = np.clip(np.rint(pixels + weight[ys, xs, None] * change), 0, 255).astype(np.uint8)
        return out
