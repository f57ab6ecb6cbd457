"""iHarmony4, or any dataset in its layout: composites, their real images and their foreground masks.

Layout (SPEC §6)::

    <root>/IHD_train.txt, IHD_test.txt     lines like HCOCO/composite_images/c100300_1602094_1.jpg
    <root>/<Sub>/composite_images/<real>_<maskid>_<k>.jpg
    <root>/<Sub>/masks/<real>_<maskid>.png           white (255, or 65535 in a 16-bit PNG) = foreground
    <root>/<Sub>/real_images/<real>.jpg

The mask and real paths are derived from the composite name by splitting off the last two ``_`` fields, so
real names may hold hyphens or underscores (``d18897-20120428-164138_1_2.jpg``). A real image is looked up
as ``<real>.jpg`` first and, for datasets of one's own with PNG composites, ``<real>`` + the composite's
extension.

Preprocessing (``--preprocess``):

* ``resize_and_crop`` (training): RandomResizedCrop to ``--crop_size`` (scale 0.5–1, aspect 3/4–4/3,
  antialiased bilinear for the images, nearest for the mask) and a horizontal flip unless ``--no_flip``,
  one set of random parameters for composite, real and mask (torchvision transforms v2). A crop whose mask
  holds at most one foreground pixel is redrawn unless ``torch.rand() < 0.05`` (SPEC §3), at most
  ``MAX_REDRAWS`` times. All randomness comes from torch's generator, which DataLoader seeds per worker.
  With ``--jpeg_draft``, JPEG composites and real images whose short side exceeds 4 × ``--crop_size`` are
  decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, PIL's draft mode), the short side staying at least
  2 × ``--crop_size`` (every crop then still has at least ``--crop_size`` source pixels per side), and the
  mask is box-reduced by the same factor and thresholded at half.
* ``resize`` (the test protocol, SPEC §4): composite and real resized to ``--load_size`` square with
  bilinear interpolation without antialiasing, half-pixel centres (OpenCV ``INTER_LINEAR``), rounded to
  uint8 and only then scaled to [-1, 1]; the mask is resized the same way and thresholded at 0.5
  (``>= 0.5`` is foreground). ``mask_metric`` is the original mask resized nearest-neighbour, the mask of
  fMSE.
* ``none``: the original size, reflect-padded (composite, real and mask alike, so the padded picture is a
  consistent composite) to a multiple of 256; ``pad`` = [left, top, right, bottom] and ``orig_size`` =
  [H, W] let the caller crop the result back. Sizes differ between images, so this mode needs
  ``--batch_size 1``.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
from collections import Counter
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

logger = logging.getLogger(__name__)

SUBSETS = ('HCOCO', 'HAdobe5k', 'HFlickr', 'Hday2night')
LIST_FILES = {'train': 'IHD_train.txt', 'test': 'IHD_test.txt'}
SIZE_DIVISOR = 256  # the generator's eight stride-2 levels
CROP_SCALE = (0.5, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
KEEP_EMPTY_CROP_PROB = 0.05  # SPEC §3: a crop without foreground is kept with this probability
MAX_REDRAWS = 50  # then the last crop is kept, so that a mask with (almost) no foreground cannot loop forever
MASK_THRESHOLD = 0.5
_SIXTEEN_BIT_MODES = ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I')


@dataclass(frozen=True)
class Sample:
    """One line of a list file and the three files it names (absolute paths)."""

    line_no: int
    line: str
    subset: str
    comp: str
    mask: str
    real: str


@dataclass(frozen=True)
class ListProblem:
    """A problem found while reading a list file: its kind and a one-line message naming file and line."""

    kind: str
    message: str


def derive_paths(line: str) -> tuple[str, str, str, str]:
    """Split a list line into (subset, composite, mask, real stem), paths relative to the dataset root.

    ``HCOCO/composite_images/c100300_1602094_1.jpg`` gives ``('HCOCO', 'HCOCO/composite_images/
    c100300_1602094_1.jpg', 'HCOCO/masks/c100300_1602094.png', 'HCOCO/real_images/c100300')``; the real
    image's extension is resolved against the files on disk (:func:`real_candidates`).

    Raises:
        ValueError: the line is not ``<Sub>/composite_images/<real>_<maskid>_<k>.<ext>``.
    """
    text = line.strip().replace('\\', '/')
    if text.startswith('./'):
        text = text[2:]
    parts = text.split('/')
    if len(parts) != 3 or parts[1] != 'composite_images' or not parts[0] or not parts[2]:
        raise ValueError('expected <Sub>/composite_images/<real>_<maskid>_<k>.jpg')
    subset, _, name = parts
    stem, dot, ext = name.rpartition('.')
    if not dot or not stem:
        raise ValueError(f'composite name {name!r} has no extension')
    fields = stem.rsplit('_', 2)
    if len(fields) != 3 or not all(fields):
        raise ValueError(f'composite name {name!r} is not <real>_<maskid>_<k>.{ext}')
    real, mask_id, _k = fields
    return (subset, f'{subset}/composite_images/{name}', f'{subset}/masks/{real}_{mask_id}.png',
            f'{subset}/real_images/{real}')


def real_candidates(real_stem: str, comp_path: str) -> list[str]:
    """File names tried, in order, for the real image: ``.jpg``, then the composite's own extension."""
    exts = ['.jpg']
    comp_ext = os.path.splitext(comp_path)[1]
    if comp_ext and comp_ext != '.jpg':
        exts.append(comp_ext)
    return [real_stem + e for e in exts]


class _DirIndex:
    """Existence checks through one directory listing per folder (fast for tens of thousands of files)."""

    def __init__(self) -> None:
        self._names: dict[str, frozenset[str]] = {}

    def exists(self, path: str) -> bool:
        folder, name = os.path.split(path)
        if folder not in self._names:
            try:
                self._names[folder] = frozenset(os.listdir(folder))
            except OSError:
                self._names[folder] = frozenset()
        return name in self._names[folder]


def read_list(root: str | os.PathLike, phase: str, limit: Optional[int] = None,
              check_files: bool = True) -> tuple[list[Sample], list[ListProblem]]:
    """Read ``IHD_<phase>.txt`` under ``root``; return the samples and every problem found.

    Args:
        root: the dataset root.
        phase: 'train' or 'test'.
        limit: read only the first ``limit`` non-empty lines (``--max_dataset_size``).
        check_files: check that each line's composite, mask and real image exist.

    Returns:
        The well-formed samples whose files exist, and the problems (missing list file, malformed lines,
        missing files), each naming the list file, the line number and the path.
    """
    if phase not in LIST_FILES:
        raise ValueError(f'phase must be one of {", ".join(LIST_FILES)}, got {phase!r}')
    root = os.path.abspath(os.fspath(root))
    list_path = os.path.join(root, LIST_FILES[phase])
    if not os.path.isfile(list_path):
        hint = ('--dataset_root must be the iHarmony4 folder that holds IHD_train.txt and IHD_test.txt'
                if os.path.isdir(root) else f'the dataset root {root} does not exist')
        return [], [ListProblem('list file missing', f'{list_path} not found: {hint}')]
    with open(list_path, encoding='utf-8', errors='replace') as f:
        raw_lines = f.read().splitlines()
    samples: list[Sample] = []
    problems: list[ListProblem] = []
    index = _DirIndex()
    n_lines = 0
    for line_no, raw in enumerate(raw_lines, start=1):
        line = raw.strip()
        if not line:
            continue
        n_lines += 1
        if limit is not None and n_lines > limit:
            break
        where = f'{list_path} line {line_no}'
        try:
            subset, comp_rel, mask_rel, real_stem = derive_paths(line)
        except ValueError as exc:
            problems.append(ListProblem('malformed line', f'{where}: {exc}, got {line!r}'))
            continue
        comp = os.path.join(root, *comp_rel.split('/'))
        mask = os.path.join(root, *mask_rel.split('/'))
        cands = [os.path.join(root, *c.split('/')) for c in real_candidates(real_stem, comp_rel)]
        real = cands[0]
        ok = True
        if check_files:
            if not index.exists(comp):
                problems.append(ListProblem('composite missing', f'{where}: composite {comp} does not exist'))
                ok = False
            if not index.exists(mask):
                problems.append(ListProblem('mask missing', f'{where}: mask {mask} (derived from the composite '
                                                            f'name) does not exist'))
                ok = False
            found = [c for c in cands if index.exists(c)]
            if found:
                real = found[0]
            else:
                problems.append(ListProblem('real image missing', f'{where}: real image {real} (derived from the '
                                                                  f'composite name) does not exist'))
                ok = False
        if ok:
            samples.append(Sample(line_no, line, subset, comp, mask, real))
    if n_lines == 0:
        problems.append(ListProblem('empty list', f'{list_path} lists no composites'))
    return samples, problems


# ----------------------------------------------------------------------------------------------- images
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


def resize_uint8_bilinear(img: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Bilinear resize of a uint8 C×H×W image, no antialiasing, half-pixel centres (OpenCV INTER_LINEAR).

    Computed in float32 and rounded to the nearest integer: the exact bilinear value rounded, the same on
    every device (torch's native uint8 CPU kernel is one level off on about a fifth of the pixels).
    """
    out = TF.resize(img.float(), size, interpolation=InterpolationMode.BILINEAR, antialias=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def to_unit_range(img: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float32 [-1, 1] as x / 127.5 - 1 (``((y + 1) * 127.5).round()`` inverts it exactly)."""
    return img.float() / 127.5 - 1.0


# ----------------------------------------------------------------------------------------------- dataset
class IHarmony4Dataset(Dataset):
    """Composites, real images and masks listed in ``IHD_train.txt`` or ``IHD_test.txt``.

    Items are dicts: ``comp``, ``real`` (float32 3×H×W in [-1, 1]), ``mask`` (float32 1×H×W in {0, 1}),
    ``comp_path`` (str), ``subset`` (e.g. 'HCOCO'), ``index`` (int); with ``--preprocess resize`` also
    ``mask_metric`` (the original mask resized nearest, 1×S×S); with ``--preprocess none`` also
    ``mask_metric`` (the padded mask), ``pad`` (LongTensor [left, top, right, bottom]) and ``orig_size``
    (LongTensor [H, W]).

    The list is read and every listed file's existence checked at construction (a missing file raises
    FileNotFoundError naming the list line and the path). Sizes are compared when an item is loaded
    (headers only, before decoding); ``scripts/check_dataset.py`` checks them all up front.
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
        """The composite, real (H×W×3 uint8) and mask (H×W bool) of item ``index`` at their original size.

        Raises:
            ValueError: an unreadable or truncated image, a mask whose size differs from its composite, or a
                composite whose size differs from its real image (the message names the files).
            FileNotFoundError: a file disappeared since the dataset was created.
        """
        s = self.samples[index]
        with contextlib.ExitStack() as stack:
            comp_img, mask_img, real_img = (stack.enter_context(open_image(p)) for p in (s.comp, s.mask, s.real))
            if mask_img.size != comp_img.size:
                raise ValueError(f'mask {s.mask} is {_wxh(mask_img.size)} but its composite {s.comp} is '
                                 f'{_wxh(comp_img.size)}: a mask must have the size of its composite')
            if real_img.size != comp_img.size:
                raise ValueError(f'composite {s.comp} is {_wxh(comp_img.size)} but its real image {s.real} is '
                                 f'{_wxh(real_img.size)}: they must have the same size')
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
        if self.preprocess == 'none':
            item['orig_size'] = torch.tensor(mask_np.shape, dtype=torch.long)
            comp_np, real_np, mask_np, pad = _pad_reflect(comp_np, real_np, mask_np, SIZE_DIVISOR)
            item['pad'] = torch.tensor(pad, dtype=torch.long)
        comp = torch.from_numpy(np.ascontiguousarray(comp_np.transpose(2, 0, 1)))
        real = torch.from_numpy(np.ascontiguousarray(real_np.transpose(2, 0, 1)))
        mask = torch.from_numpy(np.ascontiguousarray(mask_np[None])).to(torch.uint8)

        if self.preprocess == 'resize_and_crop':
            comp, real, mask = self._random_crop(comp, real, mask)
            item['mask'] = mask.float()
        elif self.preprocess == 'resize':
            size = [self.opt.load_size, self.opt.load_size]
            comp, real = resize_uint8_bilinear(comp, size), resize_uint8_bilinear(real, size)
            soft = TF.resize(mask.float(), size, interpolation=InterpolationMode.BILINEAR, antialias=False)
            item['mask'] = (soft >= MASK_THRESHOLD).float()
            item['mask_metric'] = TF.resize(mask, size, interpolation=InterpolationMode.NEAREST).float()
        else:
            item['mask'] = mask.float()
            item['mask_metric'] = item['mask'].clone()
        item['comp'] = to_unit_range(comp)
        item['real'] = to_unit_range(real)
        return item

    def _random_crop(self, comp: torch.Tensor, real: torch.Tensor,
                     mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One RandomResizedCrop (+ flip) for all three, redrawn while the crop misses the foreground (SPEC §3)."""
        inputs = (tv_tensors.Image(comp), tv_tensors.Image(real), tv_tensors.Mask(mask))
        for attempt in range(MAX_REDRAWS + 1):
            c, r, m = self.train_transform(*inputs)
            if m.sum() > 1 or attempt == MAX_REDRAWS or torch.rand(()) < KEEP_EMPTY_CROP_PROB:
                break
        return c.as_subclass(torch.Tensor), r.as_subclass(torch.Tensor), m.as_subclass(torch.Tensor)


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


def _wxh(size: tuple[int, int]) -> str:
    return f'{size[0]}x{size[1]}'


def _pad_reflect(comp: np.ndarray, real: np.ndarray, mask: np.ndarray,
                 divisor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """Reflect-pad the three arrays to a multiple of ``divisor``, split evenly; returns [left, top, right, bottom].

    numpy's reflect padding repeats the reflection when the padding exceeds the image, so any size works.
    """
    h, w = mask.shape
    ph, pw = -h % divisor, -w % divisor
    top, left = ph // 2, pw // 2
    bottom, right = ph - top, pw - left
    if not (ph or pw):
        return comp, real, mask, [0, 0, 0, 0]
    spec3 = ((top, bottom), (left, right), (0, 0))
    mode = 'reflect' if h > 1 and w > 1 else 'edge'
    comp = np.pad(comp, spec3, mode=mode)
    real = np.pad(real, spec3, mode=mode)
    mask = np.pad(mask, spec3[:2], mode=mode)
    return comp, real, mask, [left, top, right, bottom]

