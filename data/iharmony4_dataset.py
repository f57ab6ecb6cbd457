"""iHarmony4, or any dataset in its layout: composites, their real images and their foreground masks.

The list files and the paths they name are read by :mod:`data.lists`. Files are read in two ways:

* Training (``--preprocess resize_and_crop``) reads with PIL. The foreground is the value 255 (65535 in a
  16-bit PNG; the first channel of a colour mask). RandomResizedCrop to ``--crop_size`` (scale 0.5–1, aspect
  3/4–4/3, antialiased bilinear for the images, nearest for the mask) and a horizontal flip unless
  ``--no_flip``, one set of random parameters for composite, real and mask (torchvision transforms v2). A crop
  whose mask holds at most one foreground pixel is redrawn unless ``torch.rand() < 0.05`` (as the released
  training did), at most ``MAX_REDRAWS`` times. All randomness comes from torch's generator, which
  DataLoader seeds per worker. With ``--jpeg_draft``, JPEG composites and real images whose short side
  exceeds 4 × ``--crop_size`` are decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, PIL's draft
  mode), the short side staying at least 2 × ``--crop_size``, and the mask is box-reduced by the same factor
  and thresholded at half.
* Evaluation (``--preprocess resize`` and ``none``) reads exactly as the released test code did, so that the
  network inputs are its inputs bit for bit: composite and real decoded by OpenCV (``cv2.imread``, BGR →
  RGB, EXIF orientation applied); the network mask is 1 where the first channel of OpenCV's BGR decoding
  of the PNG is 255 (a grey PNG decodes to three equal channels; a 16-bit PNG is reduced to its high byte,
  so 65280–65535 count as foreground; in a colour PNG the first channel is blue). ``mask_metric``, the mask
  of fMSE, is PIL's ``convert('1')`` of the PNG (grey values dithered, Floyd–Steinberg).

  ``resize`` (the test protocol): composite, real and the {0, 1} uint8 mask alike are resized to
  ``--load_size`` square by ``cv2.resize(..., INTER_LINEAR)``, OpenCV's fixed-point bilinear (within one
  level of the exact bilinear value, not always rounded like it); ``mask_metric`` is resized by PIL, which
  resizes a mode-'1' image nearest-neighbour. Images already of that size pass unchanged.
  ``none`` (``--batch_size 1``): the original size, reflect-padded (composite, real and both masks alike) to
  a multiple of 256; ``pad`` = [left, top, right, bottom] and ``orig_size`` = [H, W] let the caller crop back.

Items hold uint8 images and {0, 1} uint8 masks: a quarter of float32's bytes to pass from loader workers to the
training process and to the GPU. The model scales them to [-1, 1] on its device (``util.image.to_unit_range``:
x / 127.5 - 1, bit-identical in float32 to the released ToTensor + Normalize(0.5, 0.5)). Truncated JPEG and PNG
files are refused before OpenCV would decode them partially.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
from collections import Counter
from typing import Optional

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2

from .lists import LIST_FILES, SUBSETS, ListProblem, Sample, derive_paths, read_list, real_candidates

__all__ = ['IHarmony4Dataset', 'LIST_FILES', 'SUBSETS', 'ListProblem', 'Sample', 'decode', 'derive_paths',
           'mask_array', 'metric_mask', 'open_image', 'read_bgr', 'read_list', 'real_candidates', 'resize_linear',
           'rgb_array']

logger = logging.getLogger(__name__)

SIZE_DIVISOR = 256  # the generator's eight stride-2 levels
CROP_SCALE = (0.5, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
KEEP_EMPTY_CROP_PROB = 0.05  # the released training keeps a crop without foreground with this probability
MAX_REDRAWS = 50  # then the last crop is kept, so that a mask with (almost) no foreground cannot loop forever
_SIXTEEN_BIT_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I')
_JPEG_SOI, _PNG_SIGNATURE = b'\xff\xd8', b'\x89PNG\r\n\x1a\n'
_JPEG_MARKER = re.compile(rb'\xff[^\x00\xff\xd0-\xd7]')  # a marker: not stuffed data, fill bytes or a restart
_JPEG_EOI, _JPEG_STANDALONE = 0xD9, (0x01, 0xD8)  # TEM and SOI carry no length


# ----------------------------------------------------------------------------------------------- PIL (training)
def open_image(path: str) -> Image.Image:
    """Open an image lazily (header only); a clear error naming the file when it cannot be identified."""
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise FileNotFoundError(f'{path} does not exist') from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f'{path}: cannot read the image ({exc})') from None


def decode(img: Image.Image) -> Image.Image:
    """Decode the pixels of an opened image; truncated or corrupt files raise a ValueError naming the file."""
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f'{img.filename}: cannot decode the image, it may be truncated or corrupt ({exc})') from None
    return img


def rgb_array(img: Image.Image) -> np.ndarray:
    """H×W×3 uint8 RGB pixels of any PIL image: grayscale, 16-bit, RGBA (alpha dropped) and palette converted."""
    decode(img)
    if img.mode in _SIXTEEN_BIT_MODES:
        a = np.asarray(img).astype(np.float64)
        a = np.clip(np.round(a / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(a[..., None], 3, axis=2)
    if img.mode in ('P', 'PA') and 'transparency' in img.info:
        img = img.convert('RGBA')
    if img.mode != 'RGB':
        img = img.convert('RGB')
    return np.asarray(img, dtype=np.uint8)


def mask_array(img: Image.Image) -> np.ndarray:
    """H×W bool foreground of a mask: value 255 (65535 in a 16-bit PNG); multi-channel masks use the first."""
    decode(img)
    mode = img.mode
    if mode == '1':
        return np.asarray(img, dtype=bool).copy()
    if mode in _SIXTEEN_BIT_MODES:
        return np.asarray(img) == 65535
    if mode in ('P', 'PA'):
        img, mode = img.convert('RGB'), 'RGB'
    if mode not in ('L', 'LA', 'RGB', 'RGBA', 'RGBX'):
        img, mode = img.convert('L'), 'L'
    a = np.asarray(img)
    if a.ndim == 3:
        a = a[..., 0]
    return a == 255


# ----------------------------------------------------------------------------------------------- OpenCV (evaluation)
def _jpeg_complete(data: bytes) -> bool:
    """Whether a JPEG stream reaches its end-of-image marker: segments skipped by their lengths (so that an
    EXIF thumbnail's own end marker does not count), entropy-coded data searched for the next marker."""
    pos = len(_JPEG_SOI)
    while True:
        found = _JPEG_MARKER.search(data, pos)
        if found is None:
            return False
        marker = data[found.start() + 1]
        if marker == _JPEG_EOI:
            return True
        pos = found.start() + 2
        if marker not in _JPEG_STANDALONE:  # every other marker found here carries a two-byte length
            pos += int.from_bytes(data[pos:pos + 2], 'big')


def _png_complete(data: bytes) -> bool:
    """Whether a PNG's chunks (length, type, data, CRC) run whole up to the IEND chunk."""
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos:pos + 4], 'big'), data[pos + 4:pos + 8]
        pos += 12 + length
        if kind == b'IEND':
            return pos <= len(data)
    return False


def read_bgr(path: str) -> np.ndarray:
    """H×W×3 uint8 BGR pixels exactly as ``cv2.imread(path)`` decodes them (OpenCV's default flags).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a truncated JPEG or PNG, or a file OpenCV cannot decode (the message names the file).
    """
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f'{path} does not exist') from None
    except OSError as exc:
        raise ValueError(f'{path}: cannot read the file ({exc.strerror})') from None
    if data.startswith(_JPEG_SOI) and not _jpeg_complete(data):
        raise ValueError(f'{path}: cannot decode the image, it is truncated (the JPEG data ends before its end '
                         f'marker)')
    if data.startswith(_PNG_SIGNATURE) and not _png_complete(data):
        raise ValueError(f'{path}: cannot decode the image, it is truncated (the PNG data ends before its IEND '
                         f'chunk)')
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # what cv2.imread does with the file
    if img is None:
        raise ValueError(f'{path}: cannot read the image (OpenCV cannot decode it: not an image, or corrupt)')
    return img


def metric_mask(path: str, size: Optional[int] = None) -> np.ndarray:
    """H×W bool fMSE mask: PIL's ``convert('1')`` of the PNG, resized to ``size`` square by PIL when given.

    PIL resizes a mode-'1' image nearest-neighbour whatever filter is asked, with its pixel-centre
    convention; ``convert('1')`` dithers grey values (Floyd–Steinberg), as in the released test code.
    """
    with open_image(path) as img:
        mask = decode(img).convert('1')
    if size is not None:
        mask = mask.resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(mask, dtype=bool)


def resize_linear(img: np.ndarray, size: int) -> np.ndarray:
    """``cv2.resize`` of a uint8 H×W(×C) array to ``size`` square with INTER_LINEAR (OpenCV's fixed point)."""
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)


# ----------------------------------------------------------------------------------------------- dataset
class IHarmony4Dataset(Dataset):
    """Composites, real images and masks listed in ``IHD_train.txt`` or ``IHD_test.txt``.

    Items are dicts: ``comp``, ``real`` (uint8 3×H×W, RGB), ``mask`` (uint8 1×H×W in {0, 1}), ``comp_path``
    (str), ``subset`` (e.g. 'HCOCO'), ``index`` (int); with ``--preprocess resize`` or ``none`` also
    ``mask_metric`` (uint8 1×H×W in {0, 1}, the fMSE mask); with ``none`` also ``pad`` (LongTensor
    [left, top, right, bottom]) and ``orig_size`` (LongTensor [H, W]).

    The list is read and every listed file's existence checked at construction (a missing file raises
    FileNotFoundError naming the list line and the path). Sizes are compared when an item is loaded;
    ``scripts/check_dataset.py`` checks them all up front.
    """

    def __init__(self, opt: argparse.Namespace, phase: str) -> None:
        from data import dataset_size  # here, not at import time: data/__init__.py imports this module

        self.opt = opt
        self.phase = phase
        self.root = os.path.abspath(opt.dataset_root) if opt.dataset_root else ''
        if not self.root:
            raise ValueError('--dataset_root is empty: point it at the iHarmony4 folder (the one that holds '
                             'IHD_train.txt and IHD_test.txt)')
        self.preprocess = opt.preprocess
        if self.preprocess == 'resize_and_crop':
            self._check_multiple('--crop_size', opt.crop_size)
        elif self.preprocess == 'resize':
            self._check_multiple('--load_size', opt.load_size)
        elif self.preprocess == 'none':
            if int(getattr(opt, 'batch_size', 1)) != 1:
                raise ValueError('--preprocess none keeps every image at its own size, so a batch cannot hold '
                                 'several: use --batch_size 1')
        else:
            raise ValueError(f'--preprocess {self.preprocess!r} is not one of resize_and_crop, resize, none')

        limit = dataset_size(opt, 1 << 62)
        self.samples, problems = read_list(self.root, phase, limit=limit)
        if problems:
            first = problems[0]
            more = (f' (and {len(problems) - 1} more problems: run scripts/check_dataset.py --dataset_root '
                    f'{self.root})') if len(problems) > 1 else ''
            exc_type = FileNotFoundError if first.kind.endswith('missing') else ValueError
            raise exc_type(first.message + more)
        dups = len(self.samples) - len({s.line for s in self.samples})
        if dups:
            logger.warning('%s lists %d composites more than once', LIST_FILES[phase], dups)
        self.subset_counts = Counter(s.subset for s in self.samples)
        logger.info('%s: %d composites (%s)', os.path.join(self.root, LIST_FILES[phase]), len(self.samples),
                    ', '.join(f'{k} {v}' for k, v in sorted(self.subset_counts.items())))

        # JPEG draft decoding (training only): keep a short side of at least twice the crop
        self.draft_side = 2 * opt.crop_size if (getattr(opt, 'jpeg_draft', False)
                                                and self.preprocess == 'resize_and_crop') else 0
        flip = [] if opt.no_flip else [v2.RandomHorizontalFlip(p=0.5)]
        self.train_transform = v2.Compose([
            v2.RandomResizedCrop(opt.crop_size, scale=CROP_SCALE, ratio=CROP_RATIO,
                                 interpolation=InterpolationMode.BILINEAR, antialias=True),
            *flip,
        ])

    @staticmethod
    def _check_multiple(flag: str, value: int) -> None:
        if value % SIZE_DIVISOR:
            raise ValueError(f'{flag} {value} is not a multiple of {SIZE_DIVISOR}, which the generator needs')

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The composite, real (H×W×3 uint8 RGB) and mask (H×W bool) of item ``index`` at their original size.

        Read with PIL for training, with OpenCV for evaluation (see the module docstring).

        Raises:
            ValueError: an unreadable or truncated image, a mask whose size differs from its composite, or a
                composite whose size differs from its real image (the message names the files).
            FileNotFoundError: a file disappeared since the dataset was created.
        """
        s = self.samples[index]
        if self.preprocess != 'resize_and_crop':
            comp = cv2.cvtColor(read_bgr(s.comp), cv2.COLOR_BGR2RGB)
            mask = read_bgr(s.mask)[..., 0] == 255  # the released (png / 255).astype(uint8): 1 only at 255
            _check_sizes(s, _wh(comp), _wh(mask))
            real = cv2.cvtColor(read_bgr(s.real), cv2.COLOR_BGR2RGB)
            _check_sizes(s, _wh(comp), _wh(mask), _wh(real))
            return comp, real, mask
        with contextlib.ExitStack() as stack:
            comp_img, mask_img, real_img = (stack.enter_context(open_image(p)) for p in (s.comp, s.mask, s.real))
            _check_sizes(s, comp_img.size, mask_img.size, real_img.size)
            factor = _draft(comp_img, real_img, self.draft_side) if self.draft_side else 1
            mask = mask_array(mask_img)
            if factor > 1:
                reduced = Image.fromarray(mask.astype(np.uint8) * 255).reduce(factor)
                mask = np.asarray(reduced) >= 128
                if mask.shape != (comp_img.size[1], comp_img.size[0]):
                    raise ValueError(f'{s.comp}: the JPEG decoder gave {_wxh(comp_img.size)} at 1/{factor} scale, '
                                     f'the mask {_wxh(reduced.size)}')
            return rgb_array(comp_img), rgb_array(real_img), mask

    def __getitem__(self, index: int) -> dict:
        s = self.samples[index]
        comp_np, real_np, mask_np = self.load(index)
        item: dict = {'comp_path': s.comp, 'subset': s.subset, 'index': index}
        if self.preprocess == 'resize_and_crop':
            mask = torch.from_numpy(np.ascontiguousarray(mask_np[None])).to(torch.uint8)
            # channels-last views, no copy: the antialiased resize of uint8 images is fastest in that layout
            comp, real, item['mask'] = self._random_crop(_hwc_view(comp_np), _hwc_view(real_np), mask)
        else:
            size = self.opt.load_size if self.preprocess == 'resize' else None
            metric = metric_mask(s.mask, size)
            if size is not None:
                comp_np, real_np = resize_linear(comp_np, size), resize_linear(real_np, size)
                mask_np = resize_linear(mask_np.astype(np.uint8), size)
            else:
                if metric.shape != mask_np.shape:
                    raise ValueError(f'{s.mask}: PIL reads it as {_wxh(_wh(metric))}, OpenCV as '
                                     f'{_wxh(_wh(mask_np))} (an EXIF orientation?): save it without one')
                item['orig_size'] = torch.tensor(mask_np.shape, dtype=torch.long)
                (comp_np, real_np, mask_np, metric), pad = _pad_reflect((comp_np, real_np, mask_np, metric),
                                                                        SIZE_DIVISOR)
                item['pad'] = torch.tensor(pad, dtype=torch.long)
            comp, real = _chw(comp_np), _chw(real_np)
            item['mask'] = torch.from_numpy(mask_np[None].astype(np.uint8))
            item['mask_metric'] = torch.from_numpy(metric[None].astype(np.uint8))
        item['comp'], item['real'] = comp, real
        return item

    def _random_crop(self, comp: torch.Tensor, real: torch.Tensor,
                     mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One RandomResizedCrop (+ flip) for all three, redrawn while the crop misses the foreground."""
        inputs = (tv_tensors.Image(comp), tv_tensors.Image(real), tv_tensors.Mask(mask))
        for attempt in range(MAX_REDRAWS + 1):
            c, r, m = self.train_transform(*inputs)
            if m.sum() > 1 or attempt == MAX_REDRAWS or torch.rand(()) < KEEP_EMPTY_CROP_PROB:
                break
        return c.as_subclass(torch.Tensor), r.as_subclass(torch.Tensor), m.as_subclass(torch.Tensor)


def _check_sizes(s: Sample, comp: tuple[int, int], mask: tuple[int, int],
                 real: Optional[tuple[int, int]] = None) -> None:
    """ValueError naming the files when the mask's or the real image's (W, H) differs from the composite's."""
    if mask != comp:
        raise ValueError(f'mask {s.mask} is {_wxh(mask)} but its composite {s.comp} is {_wxh(comp)}: a mask must '
                         f'have the size of its composite')
    if real is not None and real != comp:
        raise ValueError(f'composite {s.comp} is {_wxh(comp)} but its real image {s.real} is {_wxh(real)}: they '
                         f'must have the same size')


def _draft(comp: Image.Image, real: Image.Image, min_side: int) -> int:
    """Ask the JPEG decoder for composite and real at 1/2, 1/4 or 1/8 scale, short side >= ``min_side``.

    Returns the reduction factor (1: both decoded at full size: not both JPEG, or not large enough).
    """
    w, h = comp.size
    factor = 1
    while factor < 8 and min(w, h) >= 2 * factor * min_side:
        factor *= 2
    if factor == 1 or comp.format != 'JPEG' or real.format != 'JPEG':
        return 1
    for img in (comp, real):
        img.draft('RGB', (w // factor, h // factor))  # libjpeg then decodes ceil(w / factor) × ceil(h / factor)
    expected = (-(-w // factor), -(-h // factor))
    if comp.size != expected or real.size != expected:
        raise ValueError(f'{comp.filename}: the JPEG decoder offered {_wxh(comp.size)} and {_wxh(real.size)} '
                         f'for {_wxh(expected)} at 1/{factor} scale; train without --jpeg_draft')
    return factor


def _hwc_view(img: np.ndarray) -> torch.Tensor:  # 3×H×W over the H×W×3 memory: channels-last strides
    return torch.from_numpy(img if img.flags.writeable else img.copy()).permute(2, 0, 1)


def _chw(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def _wh(a: np.ndarray) -> tuple[int, int]:
    return a.shape[1], a.shape[0]


def _wxh(size: tuple[int, int]) -> str:
    return f'{size[0]}x{size[1]}'


def _pad_reflect(arrays: tuple[np.ndarray, ...], divisor: int) -> tuple[tuple[np.ndarray, ...], list[int]]:
    """Reflect-pad H×W(×C) arrays of one size to a multiple of ``divisor``, split evenly.

    Returns the padded arrays and [left, top, right, bottom]. numpy's reflect padding repeats the reflection
    when the padding exceeds the image, so any size works.
    """
    h, w = arrays[0].shape[:2]
    ph, pw = -h % divisor, -w % divisor
    top, left = ph // 2, pw // 2
    bottom, right = ph - top, pw - left
    if not (ph or pw):
        return arrays, [0, 0, 0, 0]
    mode = 'reflect' if h > 1 and w > 1 else 'edge'
    padded = tuple(np.pad(a, ((top, bottom), (left, right)) + ((0, 0),) * (a.ndim - 2), mode=mode) for a in arrays)
    return padded, [left, top, right, bottom]
