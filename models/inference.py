"""Inference on your own composites: the harmony score, and harmonization at the input's full resolution.

Two tasks outside iHarmony4, for images of any size, on any device:

* :class:`HarmonyScorer` / :func:`harmony_score`: how harmonious a composite is (SPEC §5): the distance d between
  the domain codes that the extractor E gives the foreground and the background, as ``exp(-0.04212·d)`` in (0, 1].
* :class:`Harmonizer` / :func:`harmonize`: BargainNet runs at 256×256; the change it makes is carried back to the
  original pixels at full resolution (see :meth:`Harmonizer.harmonize`).

Images are paths, PIL images or uint8 H×W×3 arrays; masks are paths, PIL images or H×W arrays (uint8 0–255, bool, or
float in [0, 1]); white is the foreground.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image

from .bargainnet_model import harmonize as harmonize_forward
from .factory import load_bargainnet, load_extractor

logger = logging.getLogger(__name__)

NET_SIZE = 256  # the side the networks run at (SPEC §4, §5)
HARMONY_SCALE = 0.04212  # score = exp(-HARMONY_SCALE * d), SPEC §5
DEFAULT_E_WEIGHT = os.path.join('checkpoints', 'latest_net_E.pth')
IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')  # masks: .png preferred
MODES = ('foreground', 'background')
METHODS = ('affine', 'delta')
DEFAULT_GRID = 8  # cells per side of the grid of colour transforms (method 'affine')
PIXEL_CHUNK = 1 << 20  # full-resolution pixels changed at a time

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]
Device = Union[str, torch.device]


# ----------------------------------------------------------------------------------------------- reading inputs
def _name(x: object, kind: str) -> str:
    return str(x) if isinstance(x, (str, os.PathLike)) else f'the {kind} array'


def _open(path: Union[str, os.PathLike], kind: str) -> Image.Image:
    if not os.path.isfile(path):
        raise FileNotFoundError(f'{kind} {path} not found')
    try:
        with Image.open(path) as img:
            img.load()
            return img
    except OSError as exc:  # PIL.UnidentifiedImageError is an OSError
        raise ValueError(f'{kind} {path} cannot be read as an image ({exc})') from exc


def read_image(image: ImageInput) -> Image.Image:
    """The composite as an RGB PIL image, from a path, a PIL image or a uint8 H×W×3 array."""
    if isinstance(image, (str, os.PathLike)):
        return _open(image, 'image').convert('RGB')
    if isinstance(image, Image.Image):
        return image.convert('RGB')
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f'an image array must be uint8 H×W×3, got {image.dtype} {image.shape}')
        return Image.fromarray(image, 'RGB')
    raise TypeError(f'an image must be a path, a PIL image or an array, got {type(image).__name__}')


def read_mask(mask: ImageInput) -> Image.Image:
    """The mask as an 8-bit grayscale ('L') PIL image; white (255) is the foreground.

    Arrays: uint8 in 0–255, bool, or float in [0, 1] (scaled by 255 and rounded). An integer array whose maximum
    is 1 is refused: it is almost certainly a 0/1 mask, which would read as nearly empty.
    """
    if isinstance(mask, (str, os.PathLike)):
        return _open(mask, 'mask').convert('L')
    if isinstance(mask, Image.Image):
        return mask.convert('L')
    if not isinstance(mask, np.ndarray):
        raise TypeError(f'a mask must be a path, a PIL image or an array, got {type(mask).__name__}')
    if mask.ndim != 2:
        raise ValueError(f'a mask array must be H×W, got shape {mask.shape}')
    if mask.dtype == bool:
        return Image.fromarray(mask.astype(np.uint8) * 255, 'L')
    if np.issubdtype(mask.dtype, np.floating):
        if mask.min() < 0 or mask.max() > 1:
            raise ValueError(f'a float mask array must lie in [0, 1], got [{mask.min()}, {mask.max()}]')
        return Image.fromarray(np.rint(mask * 255).astype(np.uint8), 'L')
    if np.issubdtype(mask.dtype, np.integer):
        if mask.min() < 0 or mask.max() > 255:
            raise ValueError(f'an integer mask array must lie in 0–255, got [{mask.min()}, {mask.max()}]')
        if mask.max() == 1:
            raise ValueError('an integer mask array with values 0/1: pass it as bool or scaled to 0/255')
        return Image.fromarray(mask.astype(np.uint8), 'L')
    raise ValueError(f'a mask array must be uint8, bool or float, got {mask.dtype}')


def read_pair(image: ImageInput, mask: ImageInput) -> tuple[Image.Image, Image.Image]:
    """Read a composite and its mask; ValueError when their sizes differ."""
    img, msk = read_image(image), read_mask(mask)
    if img.size != msk.size:
        raise ValueError(f'mask {_name(mask, "mask")} is {msk.size[0]}x{msk.size[1]} but image {_name(image, "image")} '
                         f'is {img.size[0]}x{img.size[1]}')
    return img, msk


def _resize(img: Image.Image) -> Image.Image:
    # PIL bilinear, which antialiases when shrinking: what torchvision's Resize does to a PIL image (SPEC §5)
    return img.resize((NET_SIZE, NET_SIZE), Image.Resampling.BILINEAR)


def _image_tensor(img: Image.Image) -> torch.Tensor:
    # ToTensor + Normalize(0.5, 0.5) of the released script, operation for operation
    return TF.normalize(TF.to_tensor(img), [0.5] * 3, [0.5] * 3)


def _inverted(mask: Image.Image) -> Image.Image:
    return Image.fromarray(255 - np.asarray(mask), 'L')


def find_pairs(images: Sequence[str] = (), masks: Sequence[str] = (),
               input_dirs: Sequence[str] = ()) -> list[tuple[str, str]]:
    """The (composite, mask) paths that command-line arguments name, in order.

    * ``images[i]`` with ``masks[i]``: two files, or two folders paired by file stem (``a.jpg`` with ``a.png``).
    * each of ``input_dirs``: every image in it, with its mask ``<stem>_mask.<ext>`` beside it or, failing that,
      ``masks/<stem>.<ext>``.

    A missing mask is not an error here: its expected path is returned, and reading it reports the problem for
    that composite alone. Raises ValueError for arguments that cannot be paired at all.
    """
    if len(images) != len(masks):
        raise ValueError(f'--image is given {len(images)} time(s) but --mask {len(masks)}: give them in pairs')
    pairs = []
    for image, mask in zip(images, masks):
        if os.path.isdir(image) != os.path.isdir(mask):
            raise ValueError(f'--image {image} and --mask {mask}: give two files or two folders')
        if not os.path.isdir(image):
            pairs.append((image, mask))
            continue
        mask_files = _by_stem(mask)
        for path in _image_files(image):
            stem = os.path.splitext(os.path.basename(path))[0]
            pairs.append((path, mask_files.get(stem, os.path.join(mask, stem + '.png'))))
    for folder in input_dirs:
        if not os.path.isdir(folder):
            raise ValueError(f'--input_dir {folder} is not a folder')
        beside = _by_stem(folder)
        mask_dir = os.path.join(folder, 'masks')
        in_masks = _by_stem(mask_dir) if os.path.isdir(mask_dir) else {}
        for path in _image_files(folder):
            stem = os.path.splitext(os.path.basename(path))[0]
            if stem.endswith('_mask'):
                continue
            default = os.path.join(mask_dir, stem + '.png') if os.path.isdir(mask_dir) else \
                os.path.join(folder, stem + '_mask.png')
            pairs.append((path, beside.get(stem + '_mask', in_masks.get(stem, default))))
    if not pairs:
        raise ValueError('no composites found: give --image/--mask pairs or an --input_dir holding images')
    return pairs


def _image_files(folder: str) -> list[str]:
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(IMG_EXTENSIONS) and os.path.isfile(os.path.join(folder, f)))


def _by_stem(folder: str) -> dict[str, str]:
    """Stem → image file of ``folder``; where several share a stem, the first of IMG_EXTENSIONS wins."""
    found: dict[str, str] = {}
    rank = {ext: i for i, ext in enumerate(IMG_EXTENSIONS)}
    for path in sorted(_image_files(folder), key=lambda p: rank[os.path.splitext(p)[1].lower()]):
        found.setdefault(os.path.splitext(os.path.basename(path))[0], path)
    return found


# ----------------------------------------------------------------------------------------------- harmony score
@dataclass(frozen=True)
class ScoreInput:
    """A composite prepared as SPEC §5 says: image (3,256,256) in [-1, 1], soft fg and bg masks (1,256,256)."""

    image: torch.Tensor
    fg: torch.Tensor
    bg: torch.Tensor


@dataclass(frozen=True)
class HarmonyScore:
    """``score`` = exp(-0.04212·``distance``), ``distance`` = L2 distance of the foreground and background codes."""

    score: float
    distance: float

    def line(self, name: str) -> str:
        """The released script's output line."""
        return f'The harmony score of {name} is {self.score:.2f}'


def _check_regions(has_fg: bool, has_bg: bool, mask: ImageInput) -> None:
    if not has_fg:
        raise ValueError(f'mask {_name(mask, "mask")} is empty: no foreground left at {NET_SIZE}x{NET_SIZE}')
    if not has_bg:
        raise ValueError(f'mask {_name(mask, "mask")} covers the whole image: no background left at '
                         f'{NET_SIZE}x{NET_SIZE}')


def prepare_score_input(image: ImageInput, mask: ImageInput) -> ScoreInput:
    """SPEC §5 preprocessing; ValueError for a mask of another size, or one left empty or full at 256×256.

    The image and the 8-bit mask are resized to 256×256 with PIL bilinear; the mask is kept soft (/255, no
    threshold); the background mask is the resized inverted 8-bit mask, resize(255 − mask)/255.
    """
    img, msk = read_pair(image, mask)
    fg = TF.to_tensor(_resize(msk))
    bg = TF.to_tensor(_resize(_inverted(msk)))
    _check_regions(bool(fg.any()), bool(bg.any()), mask)
    return ScoreInput(_image_tensor(_resize(img)), fg, bg)


class HarmonyScorer:
    """Harmony scores with an extractor E in eval mode (running BatchNorm statistics, SPEC §5).

    Because E is in eval mode, a composite's score does not depend on the others in its batch.
    """

    def __init__(self, extractor: nn.Module, device: Optional[Device] = None) -> None:
        self.extractor = extractor
        self.device = torch.device(device) if device is not None else next(extractor.parameters()).device

    @classmethod
    def from_weights(cls, path: str = DEFAULT_E_WEIGHT, device: Device = 'cpu', ndf: Optional[int] = None,
                     style_dim: Optional[int] = None) -> 'HarmonyScorer':
        """A scorer with the extractor of ``path`` (see :func:`load_extractor`)."""
        return cls(load_extractor(path, device, ndf, style_dim), device)

    def codes(self, inputs: Sequence[ScoreInput]) -> tuple[torch.Tensor, torch.Tensor]:
        """Foreground and background codes (N, style_dim) of prepared inputs, in one batch."""
        image = torch.stack([x.image for x in inputs]).to(self.device)
        masks = torch.stack([x.fg for x in inputs] + [x.bg for x in inputs]).to(self.device)
        self.extractor.eval()
        with torch.inference_mode():
            codes = self.extractor(torch.cat([image, image]), masks).flatten(1).float()
        return codes[:len(inputs)], codes[len(inputs):]

    def score_inputs(self, inputs: Sequence[ScoreInput]) -> list[HarmonyScore]:
        """Scores of prepared inputs, in one batch."""
        fg, bg = self.codes(inputs)
        distances = torch.linalg.vector_norm(fg - bg, dim=1).cpu().tolist()
        return [HarmonyScore(math.exp(-HARMONY_SCALE * d), d) for d in distances]

    def score(self, image: ImageInput, mask: ImageInput) -> HarmonyScore:
        """The harmony score of one composite."""
        return self.score_inputs([prepare_score_input(image, mask)])[0]

    def score_many(self, pairs: Sequence[tuple[ImageInput, ImageInput]], batch_size: int = 16) -> list[HarmonyScore]:
        """Scores of many composites, ``batch_size`` at a time; raises on the first bad input."""
        scores: list[HarmonyScore] = []
        for start in range(0, len(pairs), batch_size):
            scores += self.score_inputs([prepare_score_input(i, m) for i, m in pairs[start:start + batch_size]])
        return scores


def harmony_score(image: ImageInput, mask: ImageInput, weight: str = DEFAULT_E_WEIGHT, device: Device = 'cpu',
                  ndf: Optional[int] = None, style_dim: Optional[int] = None) -> HarmonyScore:
    """The harmony score of one composite with the extractor of ``weight`` (loaded for this call)."""
    return HarmonyScorer.from_weights(weight, device, ndf, style_dim).score(image, mask)


# ----------------------------------------------------------------------------------------------- harmonization
def _fill_from(values: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Extend a field known where ``weight`` is 1 into where it is 0 (push-pull: a pyramid of normalized averages).

    Each level keeps its known values and takes the rest from the upsampled next coarser level, whose values are
    weighted means of the known ones; so holes of any size get a smooth continuation of the nearest known values.
    """
    if min(values.shape[-2:]) <= 1:
        mean = (values * weight).sum((-2, -1), keepdim=True) / weight.sum((-2, -1), keepdim=True).clamp_min(1e-12)
        return weight * values + (1 - weight) * mean
    num = F.avg_pool2d(values * weight, 2, ceil_mode=True)
    den = F.avg_pool2d(weight, 2, ceil_mode=True)
    coarse = _fill_from(num / den.clamp_min(1e-12), (den > 0).to(values.dtype))
    up = F.interpolate(coarse, size=values.shape[-2:], mode='bilinear', align_corners=False)
    return weight * values + (1 - weight) * up


def _solve_ridge(a: torch.Tensor, b: torch.Tensor, prior: torch.Tensor, lam: float) -> torch.Tensor:
    """argmin_M of the least squares whose normal equations are ``a M = b``, plus ``lam``·‖M − prior‖²."""
    return torch.linalg.solve(a + lam * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device), b + lam * prior)


def _fit_colour_transform(src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor,
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


def _fit_local_transforms(src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor, grid: int,
                          ridge: float = 1e-2) -> torch.Tensor:
    """Colour transforms (4×3, as :func:`_fit_colour_transform`) on the (grid+1)² nodes of a grid of cells.

    Each node's transform is fitted to the pixels around it, weighted by ``weight`` and by the bilinear weights
    that later interpolate the transforms between nodes, and pulled towards the transform of the whole region by
    ``ridge``·(pixels per cell): a node that sees few pixels, or pixels of one colour, takes the global transform.

    Args:
        src, dst: (3, h, w) images; weight: (h, w). Returns (grid+1, grid+1, 4, 3) float64.
    """
    h, w = weight.shape
    x = torch.cat([src, torch.ones_like(src[:1])]).double()
    glob = _fit_colour_transform(x[:3].flatten(1).T, dst.flatten(1).T, weight.flatten())
    xw = x * weight.double()
    wy, wx = _tent(grid + 1, h, x.device), _tent(grid + 1, w, x.device)
    # per-pixel normal equations (i, j, y, x), summed over each node's bilinear window: wy @ . @ wx^T
    a = (wy @ (xw[:, None] * x[None]) @ wx.T).permute(2, 3, 0, 1)
    b = (wy @ (xw[:, None] * dst.double()[None]) @ wx.T).permute(2, 3, 0, 1)
    lam = ridge * (h / grid) * (w / grid)
    return _solve_ridge(a, b, glob, lam)


def _sample(field: torch.Tensor, ys: np.ndarray, xs: np.ndarray, size: tuple[int, int],
            align_corners: bool) -> torch.Tensor:
    """Bilinear samples (K, C) of ``field`` (1, C, n, m), which spans the whole image, at pixels (ys, xs) of an
    image of ``size`` (H, W): what ``F.interpolate`` to H×W gives at those pixels, without the whole H×W field."""
    h, w = size
    y = torch.from_numpy(ys).to(field.device, field.dtype)
    x = torch.from_numpy(xs).to(field.device, field.dtype)
    grid = torch.stack([2 * (x + 0.5) / w - 1, 2 * (y + 0.5) / h - 1], -1)[None, None]
    return F.grid_sample(field, grid, mode='bilinear', padding_mode='border', align_corners=align_corners)[0, :, 0].T


class Harmonizer:
    """BargainNet on composites of any size: the network at 256×256, its change carried back to full resolution.

    ``per_image`` (default) is the released test behaviour: BatchNorm with each image's own statistics and active
    dropout, its masks drawn from ``seed`` (the same seed for every image, so a result depends on that image
    alone); ``per_image=False`` is ``--eval``: running statistics and no dropout. On the CPU, G's and E's large
    convolutions get prepacked weights (:mod:`models.prepack`: same outputs, faster) unless ``prepack_weights``
    is False.
    """

    def __init__(self, netG: nn.Module, netE: nn.Module, device: Optional[Device] = None, per_image: bool = True,
                 seed: int = 0, prepack_weights: bool = True) -> None:
        self.netG, self.netE = netG, netE
        self.device = torch.device(device) if device is not None else next(netG.parameters()).device
        self.per_image = per_image
        self.seed = seed
        self.scorer = HarmonyScorer(netE, self.device)  # the same E, in eval mode while scoring

    @classmethod
    def from_checkpoints(cls, checkpoints_dir: str, name: str, epoch: str = 'latest', device: Device = 'cpu',
                         ngf: Optional[int] = None, ndf: Optional[int] = None, style_dim: Optional[int] = None,
                         use_dropout: bool = True, per_image: bool = True, seed: int = 0) -> 'Harmonizer':
        """A harmonizer with the networks of :func:`load_bargainnet`."""
        netG, netE, _ = load_bargainnet(os.path.join(checkpoints_dir, name), epoch, device, ngf=ngf, ndf=ndf,
                                        style_dim=style_dim, no_dropout=not use_dropout)
        return cls(netG, netE, device, per_image, seed)

    def harmonize_net(self, comp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """G(comp, mask, E(comp, 1 − mask)) at network size, as ``BargainNetModel.harmonize`` runs it in test.

        Args:
            comp: (B,3,H,W) in [-1, 1], sides multiples of 256.
            mask: (B,1,H,W) in {0, 1}, the region to harmonize.
        """
        harm, _ = harmonize_forward(self.netG, self.netE, comp, mask, comp, self.per_image,
                                    [self.seed] * comp.shape[0])
        return harm

    def harmonize(self, image: ImageInput, mask: ImageInput, mode: str = 'foreground', method: str = 'affine',
                  grid: int = DEFAULT_GRID) -> np.ndarray:
        """Harmonize a composite at its own size; return a uint8 H×W×3 array.

        The composite and the mask are resized to 256×256 (PIL bilinear, as for the score, so that a large photo is
        averaged rather than point-sampled); the mask fed to G is the resized mask thresholded at 0.5, and the
        background code comes from the rest (the released test path). The change G makes is then applied to the
        original pixels, weighted by the full-resolution mask: a pixel of weight w becomes
        ``round(pixel + w·change)``. The weight is mask/255 in ``foreground`` mode, so pixels where the mask is 0
        are exactly unchanged; in ``background`` mode (the background is harmonized to the foreground, G gets the
        inverted mask) it is (255 − mask)/255, so pixels where the mask is 255 are exactly unchanged.

        The change is learnt from the 256×256 pixels resized from the region alone (resized mask 255: they saw
        no pixel of the other region; a region too thin for any uses its soft coverage instead), never from the
        boundary pixels, whose colour is part background. ``method`` says how it reaches full resolution:

        * ``affine`` (default): colour transforms ``[r, g, b, 1] @ M`` (4×3) fitted by least squares to
          (comp, harm) at 256×256 on a ``grid``×``grid`` grid of cells, bilinearly interpolated between the grid
          nodes and applied to each original pixel (guided upsampling). Harmonization is above all a colour change,
          and a colour transform carries it to every pixel in proportion to that pixel's own colour: fine detail
          keeps its contrast, no high-frequency artefact of G reaches the result, and the grid follows changes
          that vary across the region. ``grid=1``: one transform for the whole region.
        * ``delta``: the per-pixel difference harm − comp at 256×256, extended from those pixels over the rest by
          push-pull filling, bilinearly upsampled and added. It keeps every local change G makes, its artefacts
          at 256-pixel scale too, and adds the same amount to a dark and a bright pixel of the same cell.

        Raises:
            ValueError: a mask of another size than the image, or one that leaves no region to harmonize or no
                region to take the domain code from at 256×256.
        """
        if mode not in MODES:
            raise ValueError(f'mode [{mode}] is not known; choose {" or ".join(MODES)}')
        if method not in METHODS:
            raise ValueError(f'method [{method}] is not known; choose {" or ".join(METHODS)}')
        if grid < 1:
            raise ValueError(f'grid {grid}: a grid needs at least 1 cell per side')
        img, msk = read_pair(image, mask)
        region = msk if mode == 'foreground' else _inverted(msk)
        soft = TF.to_tensor(_resize(region))[None].to(self.device)
        hard = (soft > 0.5).float()
        in_region, out_region = bool(hard.any()), not bool(hard.all())
        _check_regions(*((in_region, out_region) if mode == 'foreground' else (out_region, in_region)), mask)
        comp = _image_tensor(_resize(img))[None].to(self.device)
        harm = self.harmonize_net(comp, hard)
        known = (soft >= 1).float() if (soft >= 1).any() else soft * hard

        size = img.size[::-1]
        if method == 'delta':
            delta = _fill_from(harm - comp, known)
        elif grid == 1:
            transform = _fit_colour_transform(comp[0].flatten(1).T, harm[0].flatten(1).T, known.flatten())
        else:  # (1, 12, grid+1, grid+1): the 4×3 transforms of the grid's nodes, as channels
            nodes = _fit_local_transforms(comp[0], harm[0], known[0, 0], grid).flatten(2).permute(2, 0, 1)[None]

        out = np.array(img)
        weight = np.asarray(region, dtype=np.float32) / 255
        all_ys, all_xs = np.nonzero(weight)
        for start in range(0, len(all_ys), PIXEL_CHUNK):  # bounded memory for photos of any size
            ys, xs = all_ys[start:start + PIXEL_CHUNK], all_xs[start:start + PIXEL_CHUNK]
            pixels = out[ys, xs].astype(np.float32)
            if method == 'delta':
                change = _sample(delta, ys, xs, size, align_corners=False) * 127.5
            else:
                m = transform if grid == 1 else _sample(nodes, ys, xs, size, align_corners=True).reshape(-1, 4, 3)
                src = torch.from_numpy(pixels).to(self.device, torch.float64) / 127.5 - 1
                new = (torch.cat([src, torch.ones_like(src[:, :1])], 1)[:, None] @ m)[:, 0]
                change = (new - src) * 127.5
            new_pixels = pixels + weight[ys, xs, None] * change.float().cpu().numpy()
            out[ys, xs] = np.clip(np.rint(new_pixels), 0, 255).astype(np.uint8)
        return out


def harmonize(image: ImageInput, mask: ImageInput, checkpoints_dir: str, name: str, epoch: str = 'latest',
              device: Device = 'cpu', mode: str = 'foreground', method: str = 'affine', grid: int = DEFAULT_GRID,
              per_image: bool = True, seed: int = 0) -> np.ndarray:
    """Harmonize one composite with the weights of ``<checkpoints_dir>/<name>/<epoch>_net_{G,E}.pth``.

    Loads the networks for this call; keep a :class:`Harmonizer` for many images. See
    :meth:`Harmonizer.harmonize`.
    """
    harmonizer = Harmonizer.from_checkpoints(checkpoints_dir, name, epoch, device, per_image=per_image, seed=seed)
    return harmonizer.harmonize(image, mask, mode, method, grid)
