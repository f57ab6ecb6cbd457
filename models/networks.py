"""Layers and networks of BargainNet: the attention U-Net generator and the domain code extractor.

Module and parameter names follow the released code, so that ``state_dict()`` is the released checkpoint
format unchanged (``tests/reference/checkpoint_keys_*.tsv`` lists its keys and shapes). Networks are built by
:func:`models.factory.create_networks`.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn import init

SIZE_DIVISOR = 256  # eight stride-2 levels


class SampleBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that can normalize every sample with its own statistics.

    With ``per_sample`` set (and in training mode) each image is normalized over its own H×W: what BatchNorm
    computes on a batch of one image, as the released code trained and tested. Results then do not depend on
    which images share a batch, and a batch of B is B batch-1 forwards side by side. The running statistics
    are updated (with the mean of the images' statistics, as B batch-1 steps would on average) only when
    ``update_stats`` is set too (training); evaluation leaves them untouched. Parameters and buffers are those
    of ``nn.BatchNorm2d``, so checkpoints are unchanged.
    """

    per_sample = False
    update_stats = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.per_sample:
            track = self.update_stats and self.track_running_stats
            return F.instance_norm(x, self.running_mean if track else None, self.running_var if track else None,
                                   self.weight, self.bias, use_input_stats=True,
                                   momentum=self.momentum if self.momentum is not None else 0.1, eps=self.eps)
        return super().forward(x)


class SampleDropout(nn.Dropout):
    """Dropout that can draw its mask for each sample from a seed of that sample.

    With ``sample_seeds`` set (one integer per sample of the next batch), the mask of a sample depends only
    on its seed and on ``layer_id``, so that test results with dropout active (the released protocol) are
    repeatable and identical for any batch size.
    """

    def __init__(self, p: float = 0.5, layer_id: int = 0) -> None:
        super().__init__(p)
        self.layer_id = layer_id
        self.sample_seeds: Optional[Sequence[int]] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0 or self.sample_seeds is None:
            return super().forward(x)
        if len(self.sample_seeds) != x.shape[0]:
            raise ValueError(f'{len(self.sample_seeds)} dropout seeds for a batch of {x.shape[0]}')
        masks = []
        for seed in self.sample_seeds:
            gen = torch.Generator(device=x.device)
            gen.manual_seed((int(seed) * 1_000_003 + self.layer_id) % (2 ** 63))
            masks.append(torch.rand(x.shape[1:], generator=gen, device=x.device) >= self.p)
        keep = torch.stack(masks).to(x.dtype)
        return x * keep / (1.0 - self.p)


def get_norm_layer(norm_type: str = 'batch') -> Callable[[int], nn.Module]:
    """Return a constructor of normalization layers: batch, instance or none."""
    if norm_type == 'batch':
        return functools.partial(SampleBatchNorm2d, affine=True, track_running_stats=True)
    if norm_type == 'instance':
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if norm_type == 'none':
        return lambda num_features: nn.Identity()
    raise ValueError(f'normalization layer [{norm_type}] is not known; choose batch, instance or none')


def init_weights(net: nn.Module, init_type: str = 'normal', init_gain: float = 0.02) -> None:
    """Initialize conv weights (``init_type``, scale ``init_gain``), biases to 0, BatchNorm weights N(1, gain)."""
    def init_func(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if init_type == 'normal':
                init.normal_(m.weight, 0.0, init_gain)
            elif init_type == 'xavier':
                init.xavier_normal_(m.weight, gain=init_gain)
            elif init_type == 'kaiming':
                init.kaiming_normal_(m.weight, a=0, mode='fan_in')
            elif init_type == 'orthogonal':
                init.orthogonal_(m.weight, gain=init_gain)
            else:
                raise ValueError(f'initialization method [{init_type}] is not known')
            if m.bias is not None:
                init.constant_(m.bias, 0.0)
        elif isinstance(m, nn.BatchNorm2d):
            init.normal_(m.weight, 1.0, init_gain)
            init.constant_(m.bias, 0.0)
    net.apply(init_func)


class UnetBlock(nn.Module):
    """One U-Net level: down path, inner submodule, up path, skip connection and optional attention.

    The ``model`` Sequential keeps the released layer order (and so the checkpoint indices):
    outermost ``[down, sub, relu, up, tanh]``, innermost ``[lrelu, down, relu, up, norm]``, other levels
    ``[lrelu, down, norm, sub, relu, up, norm(, dropout)]``. Non-outermost levels return
    ``cat([x, model(x)])``, gated by ``sigmoid(conv1x1(.))`` when ``use_attention``.
    """

    def __init__(self, outer_nc: int, inner_nc: int, input_nc: Optional[int] = None,
                 submodule: Optional[nn.Module] = None, outermost: bool = False, innermost: bool = False,
                 norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d, use_bias: bool = False,
                 use_dropout: bool = False, use_attention: bool = False, dropout_id: int = 0) -> None:
        super().__init__()
        self.outermost = outermost
        input_nc = outer_nc if input_nc is None else input_nc
        if use_attention:  # registered first: the released key order
            self.attention = nn.Sequential(nn.Conv2d(2 * outer_nc, 2 * outer_nc, kernel_size=1), nn.Sigmoid())
        else:
            self.attention = None
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)
        uprelu = nn.ReLU(True)
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            layers = [downconv, submodule, uprelu, upconv, nn.Tanh()]
        elif innermost:
            upconv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            layers = [downrelu, downconv, uprelu, upconv, norm_layer(outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
            layers = [downrelu, downconv, norm_layer(inner_nc), submodule, uprelu, upconv, norm_layer(outer_nc)]
            if use_dropout:
                layers.append(SampleDropout(0.5, layer_id=dropout_id))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        c = torch.cat([x, self.model(x)], 1)
        if self.attention is not None:
            return self.attention(c) * c
        return c


class S2ADGenerator(nn.Module):
    """Generator G (``--netG s2ad``): an attention-enhanced U-Net fed with the background's domain code.

    Input: composite RGB in [-1, 1], foreground mask in {0, 1} and the background code (B, style_dim, 1, 1),
    broadcast over H×W and scaled by the learnable scalar ``weight`` (clamped to at least 0.001).
    Output: the harmonized image in [-1, 1]. Image sides must be multiples of 256.
    """

    def __init__(self, input_nc: int = 20, output_nc: int = 3, ngf: int = 64, num_downs: int = 8,
                 norm: str = 'batch', use_dropout: bool = True, style_dim: int = 16) -> None:
        super().__init__()
        if input_nc != 4 + style_dim:
            raise ValueError(f'input_nc {input_nc} must be 4 + style_dim ({4 + style_dim})')
        self.style_dim = style_dim
        self.size_divisor = 2 ** num_downs
        norm_layer = get_norm_layer(norm)
        use_bias = norm != 'batch'
        kw = dict(norm_layer=norm_layer, use_bias=use_bias)
        self.weight = nn.Parameter(torch.tensor([0.1]))
        block = UnetBlock(ngf * 8, ngf * 8, innermost=True, **kw)
        for i in range(num_downs - 5):
            block = UnetBlock(ngf * 8, ngf * 8, submodule=block, use_dropout=use_dropout, dropout_id=i, **kw)
        block = UnetBlock(ngf * 4, ngf * 8, submodule=block, use_attention=True, **kw)
        block = UnetBlock(ngf * 2, ngf * 4, submodule=block, use_attention=True, **kw)
        block = UnetBlock(ngf, ngf * 2, submodule=block, use_attention=True, **kw)
        self.model = UnetBlock(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True, **kw)

    def forward(self, comp: torch.Tensor, mask: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        b, _, h, w = comp.shape
        if h % self.size_divisor or w % self.size_divisor:
            raise ValueError(f'generator input is {h}x{w}: both sides must be multiples of {self.size_divisor}')
        code = code.reshape(b, self.style_dim, 1, 1) * self.weight.clamp(min=0.001)
        x = torch.cat([comp, mask.to(comp.dtype), code.to(comp.dtype).expand(b, self.style_dim, h, w)], 1)
        return self.model(x)


class PartialConv2d(nn.Conv2d):
    """Partial convolution with a one-channel mask (Liu et al. 2018), as in the released extractor.

    With S the mask sum in each window, U = clamp(S, 0, 1) and r = k²/(S + 1e-8)·U:
    without bias ``out = conv(x⊙M)·r``; with bias b ``out = ((conv(x⊙M) − b)·r + b)·U``. Returns ``out``
    and U, the mask of the next layer.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        kh, kw = self.kernel_size
        # the mask sums and ratios stay in float32 (float64 for a float64 network) under autocast: in float16,
        # s + 1e-8 rounds to 0 and the ratio outside the mask becomes inf * 0 = NaN
        dtype = torch.promote_types(torch.float32, self.weight.dtype)
        with torch.no_grad(), torch.autocast(device_type=mask.device.type, enabled=False):
            mask = mask.to(dtype)
            ones = torch.ones(1, 1, kh, kw, dtype=mask.dtype, device=mask.device)
            s = F.conv2d(mask, ones, stride=self.stride, padding=self.padding, dilation=self.dilation)
            update = torch.clamp(s, 0, 1)
            ratio = (kh * kw) / (s + 1e-8) * update
        raw = super().forward(x * mask.to(x.dtype)).to(dtype)
        if self.bias is None:
            return raw * ratio, update
        b = self.bias.view(1, -1, 1, 1).to(dtype)
        return ((raw - b) * ratio + b) * update, update


class StyleEncoder(nn.Module):
    """Domain code extractor E: five masked (partial) 3×3 stride-2 convolutions, global pooling, 1×1 conv.

    ``forward(image, mask)`` returns the code of the region ``mask`` (soft masks allowed) as
    (B, style_dim, 1, 1). ``ndf`` is 64 in the released model.
    """

    def __init__(self, style_dim: int = 16, ndf: int = 64, norm: str = 'batch') -> None:
        super().__init__()
        norm_layer = get_norm_layer(norm)
        use_bias = norm != 'batch'
        self.conv1f = PartialConv2d(3, ndf, kernel_size=3, stride=2, bias=True)
        self.conv2f = PartialConv2d(ndf, ndf * 2, kernel_size=3, stride=2, bias=use_bias)
        self.norm2f = norm_layer(ndf * 2)
        self.conv3f = PartialConv2d(ndf * 2, ndf * 4, kernel_size=3, stride=2, bias=use_bias)
        self.norm3f = norm_layer(ndf * 4)
        self.conv4f = PartialConv2d(ndf * 4, ndf * 8, kernel_size=3, stride=2, bias=use_bias)
        self.norm4f = norm_layer(ndf * 8)
        self.conv5f = PartialConv2d(ndf * 8, ndf * 8, kernel_size=3, stride=2, bias=use_bias)
        self.convs = nn.Conv2d(ndf * 8, style_dim, kernel_size=1)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.to(image.dtype) if mask.dtype == torch.bool else mask
        x, m = self.conv1f(image, mask)
        x = F.relu(x)
        x, m = self.conv2f(x, m)
        x = F.relu(self.norm2f(x))
        x, m = self.conv3f(x, m)
        x = F.relu(self.norm3f(x))
        x, m = self.conv4f(x, m)
        x = F.relu(self.norm4f(x))
        x, _ = self.conv5f(x, m)
        x = F.adaptive_avg_pool2d(x, 1)
        return self.convs(x)


def set_per_sample(net: nn.Module, enabled: bool, seeds: Optional[Sequence[int]] = None,
                   update_stats: bool = False) -> None:
    """Switch per-sample BatchNorm statistics on or off, and give the dropout layers per-sample seeds.

    Args:
        net: a network holding :class:`SampleBatchNorm2d` / :class:`SampleDropout` layers.
        enabled: per-sample statistics (in training mode) on or off.
        seeds: one dropout seed per sample of the next batch; None draws dropout masks from the global
            generator as ``nn.Dropout`` does (training).
        update_stats: also update the running statistics (training with per-image normalization).
    """
    for m in net.modules():
        if isinstance(m, SampleBatchNorm2d):
            m.per_sample = enabled
            m.update_stats = enabled and update_stats
        elif isinstance(m, SampleDropout):
            m.sample_seeds = seeds if enabled else None


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float,
                 distance: str = 'channelwise') -> torch.Tensor:
    """Triplet margin loss on domain codes of shape (B, C, 1, 1).

    ``channelwise`` keeps the codes' (B, C, 1, 1) shape, as the released code fed them to
    ``nn.TripletMarginLoss``: distances along the last axis (size 1), so the loss is the mean over the C
    channels of per-channel |a−p| versus |a−n| triplets. ``euclidean`` uses the L2 distance between whole
    codes, as in the paper's equations.
    """
    if distance == 'channelwise':
        return F.triplet_margin_loss(anchor, positive, negative, margin=margin, p=2)
    if distance == 'euclidean':
        flat = [t.flatten(1) for t in (anchor, positive, negative)]
        return F.triplet_margin_loss(*flat, margin=margin, p=2)
    raise ValueError(f'triplet distance [{distance}] is not known; choose channelwise or euclidean')
