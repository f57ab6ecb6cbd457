"""Build an iHarmony4-layout dataset from photos: foreground masks and colour-edited composites.

iHarmony4 made its composites by changing the colour statistics of a real image's foreground: colour transfer
from another image (HCOCO, HFlickr), another expert's retouch of the same photo (HAdobe5k), the same scene
at another time of day (Hday2night). This script does the same to any folder of photos, so that the project
can train and test without the real dataset:

* every photo gives ``--views`` real images (the whole photo and random non-square crops, rescaled and
  mirrored), each assigned to a sub-dataset (each sub-dataset gets at least one real image per split when
  there are enough, then ``--subset_weights``); HAdobe5k real images are upscaled to ``--large_side``
  pixels, like that sub-dataset's large photos;
* every real image gets object-like foreground masks (smooth star-shaped contours, ellipses, unions of
  ellipses, blobs) covering ``--fg_min``..``--fg_max`` of the image, or the user's own (``--masks``);
* every mask gets ``--per_mask`` composites: the real image with the foreground's colours changed by the
  sub-dataset's recipe (Reinhard colour transfer in Lab or histogram matching from a region of another
  photo, retouching, a day/night illumination change) plus random exposure, white-balance and tone-curve
  changes. Real and composite are the same picture outside the mask;
* the photos are split into training and test photos (``--test_photos``): test composites come from
  photos that training never saw;
* against memorization (a model that learns a few photos' own colours need not look at the background):
  ``--view_jitter`` gives every training real image a random global colour change (exposure, white balance,
  tone curve, saturation, hue), and ``--gray_photos`` adds scikit-image's greyscale photographs to the
  training split, each real image cut from them coloured by a random split toning. Test real images are
  always the photos' own pixels.

Images are written as JPEG (quality 95, no chroma subsampling), masks as 0/255 PNG, plus the list files
``IHD_train.txt``, ``IHD_test.txt``, ``<Sub>/<Sub>_train.txt``, ``<Sub>/<Sub>_test.txt`` and
``synthetic_manifest.csv`` (where every composite came from). Because JPEG blocks are coded independently
(8×8, no chroma subsampling), composite and real decode to identical pixels in every 8×8 block that the
mask does not touch. Same ``--seed``, same bytes.

Usage::

    python scripts/make_synthetic_dataset.py --out datasets/synthetic            # scikit-image's photos
    python scripts/make_synthetic_dataset.py --out datasets/mine --photos my_photos --per_photo 20
"""
from __future__ import annotations

import argparse
import csv
import logging
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from util.cli import run_main, setup_logging  # noqa: E402

logger = logging.getLogger('make_synthetic_dataset')

SUBSETS = ('HCOCO', 'HAdobe5k', 'HFlickr', 'Hday2night')  # the order of data.iharmony4_dataset.SUBSETS
# iHarmony4's training composites per sub-dataset, the default mix of sub-datasets
IHARMONY4_TRAIN = {'HCOCO': 38545, 'HAdobe5k': 19437, 'HFlickr': 7449, 'Hday2night': 311}
# the colour photographs bundled with scikit-image that load offline (cat is chelsea; the motorcycle's
# right view would leak the left one into the test split, so only the left is used)
SKIMAGE_PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'hubble_deep_field', 'immunohistochemistry',
                  'retina', 'stereo_motorcycle')
# scikit-image's greyscale photographs that load offline (``--gray_photos``: training split only)
SKIMAGE_GRAY_PHOTOS = ('camera', 'coins', 'moon', 'brick', 'grass', 'gravel', 'clock', 'page', 'text', 'cell')
PHOTO_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
ASPECTS = (4 / 3, 3 / 2, 16 / 9, 5 / 4, 3 / 4, 2 / 3, 4 / 5)
MIN_LONG_SIDE = 320
MASK_WORK_SIDE = 384  # masks are drawn at this long side, then upsampled smoothly
MAX_SHAPE_TRIES = 20
MAX_RECIPE_TRIES = 10
REF_PIXELS = 20000
IHARMONY4_FG_RANGE = (0.01, 0.9)


# ----------------------------------------------------------------------------------------------- photos
@dataclass
class Photo:
    """A source photograph: a name (file stem) and its H×W×3 uint8 pixels."""

    name: str
    pixels: np.ndarray
    masks: list[np.ndarray] = field(default_factory=list)  # the user's masks (H×W bool), if any
    gray: bool = False  # a greyscale photograph: training split only, coloured per real image


def skimage_photos() -> list[Photo]:
    """The colour photographs that scikit-image bundles (``SKIMAGE_PHOTOS``)."""
    from skimage import data

    photos = []
    for name in SKIMAGE_PHOTOS:
        img = getattr(data, name)()
        if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
            img = img[0]
        photos.append(Photo(name, np.ascontiguousarray(img[..., :3]).astype(np.uint8)))
    return photos


def skimage_gray_photos() -> list[Photo]:
    """The greyscale photographs that scikit-image bundles (``SKIMAGE_GRAY_PHOTOS``), as grey RGB."""
    from skimage import data

    return [Photo(name, np.repeat(getattr(data, name)()[..., None], 3, axis=2).astype(np.uint8), gray=True)
            for name in SKIMAGE_GRAY_PHOTOS]


def load_photos(folder: str | Path) -> list[Photo]:
    """Every image file directly in ``folder`` (sorted by name), upright (EXIF) and converted to RGB.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: an unreadable image, two photos with the same name, or fewer than two photos.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'--photos {folder}: no such folder')
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_EXTENSIONS)
    photos, seen = [], {}
    for path in files:
        if path.stem in seen:
            raise ValueError(f'{path} and {seen[path.stem]} have the same name; rename one of them')
        seen[path.stem] = path
        try:
            with Image.open(path) as img:
                img = ImageOps.exif_transpose(img)
                pixels = np.asarray(img.convert('RGB'), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ValueError(f'{path}: cannot read the photo ({exc})') from None
        if min(pixels.shape[:2]) < 64:
            logger.warning('skipping %s: %dx%d is too small', path, pixels.shape[1], pixels.shape[0])
            continue
        photos.append(Photo(path.stem, pixels))
    if len(photos) < 2:
        raise ValueError(f'--photos {folder}: found {len(photos)} usable photo(s) ({", ".join(PHOTO_EXTENSIONS)}); '
                         'at least two are needed (one for training, one for testing)')
    return photos


def attach_user_masks(photos: list[Photo], folder: str | Path) -> None:
    """Give each photo the masks named ``<photo>.png`` or ``<photo>_<anything>.<ext>`` in ``folder``.

    Foreground = value 255 (65535 in 16-bit PNGs; first channel of colour masks), as in the dataset loader.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: a mask is unreadable, or its size differs from its photo's.
    """
    from data.iharmony4_dataset import mask_array, open_image  # the loader's reading rules

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'--masks {folder}: no such folder')
    by_name = {p.name: p for p in photos}
    n = 0
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_EXTENSIONS):
        # the longest photo name that the mask name equals or starts with followed by '_'
        owners = [name for name in by_name if path.stem == name or path.stem.startswith(name + '_')]
        if not owners:
            logger.warning('mask %s matches no photo name; ignored', path)
            continue
        photo = by_name[max(owners, key=len)]
        with open_image(str(path)) as img:
            mask = mask_array(img)
        if mask.shape != photo.pixels.shape[:2]:
            raise ValueError(f'mask {path} is {mask.shape[1]}x{mask.shape[0]} but photo {photo.name} is '
                             f'{photo.pixels.shape[1]}x{photo.pixels.shape[0]}')
        photo.masks.append(mask)
        n += 1
    if n == 0:
        raise ValueError(f'--masks {folder}: no mask is named after a photo (<photo>.png or <photo>_<k>.png)')
    missing = [p.name for p in photos if not p.masks]
    if missing:
        logger.info('no mask given for %s: generated masks are used for them', ', '.join(missing))


# ----------------------------------------------------------------------------------------------- views
@dataclass(frozen=True)
class View:
    """A real image cut from a photo: the box (left, top, right, bottom) in the photo, output size, mirror."""

    box: tuple[int, int, int, int]
    size: tuple[int, int]  # (W, H)
    flip: bool


def plan_view(photo_hw: tuple[int, int], rng: np.random.Generator, first: bool, long_side: Optional[int],
              max_side: int, whole: bool) -> View:
    """Choose a non-square window of the photo (the largest one for the first view) and its output size.

    Args:
        photo_hw: the photo's (H, W).
        rng: the random generator.
        first: the photo's first view (whole photo when already non-square, else its largest window).
        long_side: the output's long side (None: about the window's own size).
        max_side: cap on the output's long side (0: none).
        whole: keep the whole photo (used with the user's masks).
    """
    h, w = photo_hw
    aspect = w / h
    if whole or (first and abs(math.log(aspect)) > math.log(1.1)):
        box = (0, 0, w, h)
    else:
        a = ASPECTS[int(rng.integers(len(ASPECTS)))]
        cw, ch = (w, w / a) if w / a <= h else (h * a, h)
        scale = 1.0 if first else rng.uniform(0.6, 0.95)
        cw, ch = max(16, int(round(cw * scale))), max(16, int(round(ch * scale)))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        box = (left, top, left + cw, top + ch)
    bw, bh = box[2] - box[0], box[3] - box[1]
    if long_side is None:
        long_side = int(round(max(bw, bh) * (1.0 if first else rng.uniform(0.75, 1.1))))
    long_side = max(long_side, MIN_LONG_SIDE)
    if max_side:
        long_side = min(long_side, max_side)
    s = long_side / max(bw, bh)
    size = (max(1, int(round(bw * s))), max(1, int(round(bh * s))))
    flip = (not first) and bool(rng.random() < 0.5)
    return View(box, size, flip)


def apply_view(pixels: np.ndarray, view: View) -> np.ndarray:
    """Cut, resize (Lanczos) and mirror a photo's pixels."""
    img = Image.fromarray(pixels).resize(view.size, Image.Resampling.LANCZOS, box=view.box)
    if view.flip:
        img = ImageOps.mirror(img)
    return np.asarray(img, dtype=np.uint8)


def apply_view_mask(mask: np.ndarray, view: View) -> np.ndarray:
    """Cut, resize (bilinear, thresholded at half) and mirror a mask, like :func:`apply_view`."""
    img = Image.fromarray(mask.astype(np.uint8) * 255).resize(view.size, Image.Resampling.BILINEAR, box=view.box)
    if view.flip:
        img = ImageOps.mirror(img)
    return np.asarray(img) >= 128


def recolour_view(pixels: np.ndarray, rng: np.random.Generator, strength: float, gray: bool) -> np.ndarray:
    """A global colour change of a whole real image (H×W×3 uint8), so that its photo's own colours vary.

    A greyscale photo is first coloured by a random split toning (shadows and highlights tinted towards two
    random colours). Then, with ``strength`` > 0: exposure ±0.5 EV, white balance ±20%, gamma and contrast,
    saturation ±40% and a hue rotation of up to ±25 degrees, each scaled by ``strength``.
    """
    x = pixels.reshape(-1, 3).astype(np.float32) / np.float32(255)
    if gray:
        lum = x[:, :1]
        shadow, highlight = (np.exp(rng.normal(0.0, 0.3, size=3)).astype(np.float32) for _ in range(2))
        x = lum * ((1 - lum) * shadow / shadow.mean() + lum * highlight / highlight.mean())
    if strength > 0:
        x = _exposure(x, strength * rng.uniform(-0.5, 0.5))
        x = _white_balance(x, np.exp(strength * rng.uniform(-0.2, 0.2, size=3)))
        x = _tone_curve(x, math.exp(strength * rng.uniform(-0.3, 0.3)), strength * rng.uniform(-0.2, 0.3))
        x = _saturation(x, 1 + strength * rng.uniform(-0.4, 0.4))
        angle = math.radians(strength * rng.uniform(-25, 25))  # rotate the chroma plane of YIQ
        yiq = x @ _RGB2YIQ.T
        c, s_ = math.cos(angle), math.sin(angle)
        yiq[:, 1], yiq[:, 2] = c * yiq[:, 1] - s_ * yiq[:, 2], s_ * yiq[:, 1] + c * yiq[:, 2]
        x = yiq @ _YIQ2RGB.T
    return np.round(np.clip(x, 0, 1) * 255).astype(np.uint8).reshape(pixels.shape)


_RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=np.float32)
_YIQ2RGB = np.linalg.inv(_RGB2YIQ).astype(np.float32)


# ----------------------------------------------------------------------------------------------- masks
def _contour_mask(h: int, w: int, rng: np.random.Generator, lobes: bool) -> Callable[[float], np.ndarray]:
    """A rotated ellipse, or a smooth star-shaped contour with ``lobes``; returns raster(scale)."""
    from skimage.draw import polygon

    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    stretch = math.exp(rng.uniform(-0.6, 0.6))
    rot = rng.uniform(0, math.pi)
    phi = np.linspace(0, 2 * math.pi, 180, endpoint=False)
    radius = np.ones_like(phi)
    if lobes:
        for k in range(2, 7):
            radius += rng.uniform(0, 0.35 / k ** 0.7) * np.cos(k * phi + rng.uniform(0, 2 * math.pi))
        radius = np.maximum(radius, 0.25)
    x0, y0 = radius * np.cos(phi) * stretch, radius * np.sin(phi) / stretch
    xs = x0 * math.cos(rot) - y0 * math.sin(rot)
    ys = x0 * math.sin(rot) + y0 * math.cos(rot)
    base = math.sqrt(h * w / math.pi)

    def raster(scale: float) -> np.ndarray:
        m = np.zeros((h, w), dtype=bool)
        rr, cc = polygon(cy + ys * base * scale, cx + xs * base * scale, shape=(h, w))
        m[rr, cc] = True
        return m

    return raster


def _union_mask(h: int, w: int, rng: np.random.Generator) -> Callable[[float], np.ndarray]:
    """Two or three overlapping ellipses (a body and its parts); returns raster(scale)."""
    from skimage.draw import ellipse

    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    parts = []
    for i in range(int(rng.integers(2, 4))):
        ang = rng.uniform(0, 2 * math.pi)
        off = 0.0 if i == 0 else rng.uniform(0.5, 1.0)
        parts.append((off * math.cos(ang), off * math.sin(ang), rng.uniform(0.4, 1.0) if i else 1.0,
                      math.exp(rng.uniform(-0.7, 0.7)), rng.uniform(0, math.pi)))
    base = math.sqrt(h * w / math.pi) * 0.7

    def raster(scale: float) -> np.ndarray:
        m = np.zeros((h, w), dtype=bool)
        r = base * scale
        for dx, dy, size, stretch, rot in parts:
            rr, cc = ellipse(cy + dy * r, cx + dx * r, max(1.0, r * size / stretch), max(1.0, r * size * stretch),
                             shape=(h, w), rotation=rot)
            m[rr, cc] = True
        return m

    return raster


def _fill_holes(m: np.ndarray) -> np.ndarray:
    """Fill the background pieces that do not touch the image border."""
    from skimage.measure import label

    lab = label(~m, connectivity=1)
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    return m | ~np.isin(lab, border)


def _blob_mask(h: int, w: int, target: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random blob: low-frequency noise plus a radial bump, thresholded to area ``target``."""
    from skimage.measure import label
    from skimage.transform import resize

    noise = resize(rng.normal(size=(int(rng.integers(4, 9)), int(rng.integers(4, 9)))), (h, w), order=3,
                   mode='reflect', anti_aliasing=False)
    yy, xx = np.mgrid[0:h, 0:w]
    cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
    d2 = ((xx - cx) / w) ** 2 + ((yy - cy) / h) ** 2
    field_ = noise * 0.5 - d2 / (2 * max(target, 0.02))
    goal = target
    m = np.zeros((h, w), dtype=bool)
    for _ in range(4):
        m = field_ > np.quantile(field_, 1 - min(goal, 0.999))
        lab = label(m)
        if lab.max() > 1:  # keep the largest piece: one object
            m = lab == (np.argmax(np.bincount(lab.ravel())[1:]) + 1)
        m = _fill_holes(m)
        frac = m.mean()
        if frac <= 0 or abs(frac - target) < 0.1 * target:
            break
        goal = min(0.999, goal * target / frac)
    return m


def generate_mask(h: int, w: int, fg_min: float, fg_max: float, rng: np.random.Generator) -> np.ndarray:
    """An object-like foreground mask (H×W bool) covering between ``fg_min`` and ``fg_max`` of the image.

    The area is drawn log-uniformly in that range; the shape is a smooth star-shaped contour, an ellipse, a
    union of ellipses or a blob, drawn at a working resolution and upsampled smoothly.
    """
    s = min(1.0, MASK_WORK_SIDE / max(h, w))
    mh, mw = max(8, int(round(h * s))), max(8, int(round(w * s)))
    for _ in range(MAX_SHAPE_TRIES):
        target = math.exp(rng.uniform(math.log(fg_min), math.log(fg_max)))
        kind = ('contour', 'ellipse', 'union', 'blob')[int(rng.integers(4))]
        if kind == 'blob':
            small = _blob_mask(mh, mw, target, rng)
        else:
            raster = (_union_mask(mh, mw, rng) if kind == 'union'
                      else _contour_mask(mh, mw, rng, lobes=kind == 'contour'))
            scale = math.sqrt(target)
            small = raster(scale)
            for _ in range(5):  # the border clips the shape: rescale until the area is right
                frac = small.mean()
                if frac > 0 and abs(frac - target) < 0.05 * target:
                    break
                scale *= math.sqrt(target / frac) if frac > 0 else 2.0
                small = raster(scale)
        if (mh, mw) != (h, w):
            up = Image.fromarray(small.astype(np.uint8) * 255).resize((w, h), Image.Resampling.BILINEAR)
            mask = np.asarray(up) >= 128
        else:
            mask = small
        if fg_min <= mask.mean() <= fg_max:
            return mask
    raise RuntimeError(f'could not draw a {w}x{h} mask covering {fg_min:.0%}..{fg_max:.0%}: widen --fg_min/--fg_max')


# ----------------------------------------------------------------------------------------------- colours
def _exposure(x: np.ndarray, ev: float) -> np.ndarray:
    return x * np.float32(2.0 ** ev)


def _white_balance(x: np.ndarray, gains: np.ndarray) -> np.ndarray:
    return x * (gains / gains.mean()).astype(np.float32)


def _tone_curve(x: np.ndarray, gamma: float, s_curve: float) -> np.ndarray:
    """Gamma, then a blend towards smoothstep (contrast; s_curve < 0 flattens); monotone for s_curve >= -1."""
    y = np.clip(x, 0, 1) ** np.float32(gamma)
    s = np.float32(s_curve)
    return (1 - s) * y + s * y * y * (3 - 2 * y)


def _saturation(x: np.ndarray, s: float) -> np.ndarray:
    lum = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return lum[:, None] + np.float32(s) * (x - lum[:, None])


def _reinhard(fg: np.ndarray, ref: np.ndarray, strength: float) -> np.ndarray:
    """Reinhard et al. colour transfer: the foreground's Lab mean and deviation moved to the reference's."""
    from skimage.color import lab2rgb, rgb2lab

    a, b = rgb2lab(fg[:, None, :])[:, 0], rgb2lab(ref[:, None, :])[:, 0]
    mu_a, sd_a, mu_b, sd_b = a.mean(0), a.std(0) + 1e-6, b.mean(0), b.std(0) + 1e-6
    moved = (a - mu_a) / sd_a * sd_b + mu_b
    lab = a + strength * (moved - a)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # out-of-gamut Lab values are clipped
        return lab2rgb(lab[:, None, :])[:, 0].astype(np.float32)


def _histogram_match(fg: np.ndarray, ref: np.ndarray, strength: float) -> np.ndarray:
    """Per-channel histogram matching of the foreground to the reference (256 levels)."""
    out = np.empty_like(fg)
    levels = np.arange(256)
    for c in range(3):
        src = np.clip(np.round(fg[:, c] * 255), 0, 255).astype(np.int64)
        cdf_s = np.cumsum(np.bincount(src, minlength=256)) / src.size
        ref_c = np.clip(np.round(ref[:, c] * 255), 0, 255).astype(np.int64)
        cdf_r = np.cumsum(np.bincount(ref_c, minlength=256)) / ref_c.size
        lut = np.interp(cdf_s, cdf_r, levels) / 255.0
        out[:, c] = fg[:, c] + np.float32(strength) * (lut[src].astype(np.float32) - fg[:, c])
    return out


def _mild_edits(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The random exposure, white-balance and tone-curve changes added to every recipe."""
    x = _exposure(x, rng.uniform(-0.3, 0.3))
    x = _white_balance(x, np.exp(rng.uniform(-0.08, 0.08, size=3)))
    return _tone_curve(x, math.exp(rng.uniform(-0.15, 0.15)), rng.uniform(-0.2, 0.2))


def edit_foreground(fg: np.ndarray, subset: str, rng: np.random.Generator,
                    ref: np.ndarray) -> tuple[np.ndarray, str]:
    """Change the colour statistics of foreground pixels (N×3 floats in [0, 1]) by ``subset``'s recipe.

    Returns the edited pixels (clipped to [0, 1]) and a short description of the recipe.
    """
    if subset == 'HCOCO':
        strength = rng.uniform(0.35, 0.85)
        x, desc = _reinhard(fg, ref, strength), f'reinhard-lab {strength:.2f}'
    elif subset == 'HFlickr':
        strength = rng.uniform(0.3, 0.8)
        x, desc = _histogram_match(fg, ref, strength), f'histogram-match {strength:.2f}'
    elif subset == 'HAdobe5k':  # another expert's retouch
        ev, gains = rng.uniform(-1.0, 1.0), np.exp(rng.uniform(-0.2, 0.2, size=3))
        gamma, s_curve, sat = math.exp(rng.uniform(-0.35, 0.35)), rng.uniform(-0.4, 0.6), rng.uniform(0.6, 1.4)
        x = _saturation(_tone_curve(_white_balance(_exposure(fg, ev), gains), gamma, s_curve), sat)
        desc = f'retouch ev {ev:+.2f} gamma {gamma:.2f} sat {sat:.2f}'
    elif subset == 'Hday2night':  # the same scene at another time of day
        night = rng.random() < 0.6
        ev = rng.uniform(-1.6, -0.5) if night else rng.uniform(0.4, 1.0)
        tint = np.array([0.85, 0.95, 1.2]) if night else np.array([1.2, 1.0, 0.8])
        tint = 1 + rng.uniform(0.3, 1.0) * (tint - 1)
        x = _saturation(_tone_curve(_white_balance(_exposure(fg, ev), tint), math.exp(rng.uniform(-0.2, 0.3)),
                                    rng.uniform(-0.3, 0.2)), rng.uniform(0.5, 0.9))
        desc = f'{"night" if night else "day"} ev {ev:+.2f}'
    else:
        raise ValueError(f'unknown sub-dataset {subset!r}; expected one of {", ".join(SUBSETS)}')
    return np.clip(_mild_edits(np.clip(x, 0, 1), rng), 0, 1), desc


def make_composite(real: np.ndarray, mask: np.ndarray, subset: str, rng: np.random.Generator, ref: np.ndarray,
                   min_change: float, max_change: float = math.inf) -> tuple[np.ndarray, str, float]:
    """The composite of ``real`` (H×W×3 uint8): foreground colours edited, background untouched.

    Recipes are redrawn (at most ``MAX_RECIPE_TRIES`` times) until the foreground's mean absolute change lies
    in [``min_change``, ``max_change``] grey levels; otherwise the attempt closest to that range is kept.

    Returns:
        The composite (uint8, equal to ``real`` where ``mask`` is False), the recipe and the mean change.
    """
    fg_u8 = real[mask]
    fg = fg_u8.astype(np.float32) / np.float32(255)
    best, best_miss = None, math.inf
    for _ in range(MAX_RECIPE_TRIES):
        edited, desc = edit_foreground(fg, subset, rng, ref)
        pix = np.round(edited * 255).astype(np.uint8)
        change = float(np.abs(pix.astype(np.int16) - fg_u8).mean())
        miss = max(min_change - change, change - max_change, 0.0)
        if miss < best_miss:
            best, best_miss = (pix, desc, change), miss
        if miss == 0:
            break
    pix, desc, change = best
    comp = real.copy()
    comp[mask] = pix
    return comp, desc, change


def reference_pixels(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Up to ``REF_PIXELS`` pixels (N×3 floats) of a random region covering 20–60% of each side of ``photo``."""
    h, w = photo.shape[:2]
    ch, cw = max(4, int(h * rng.uniform(0.2, 0.6))), max(4, int(w * rng.uniform(0.2, 0.6)))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    region = photo[top:top + ch, left:left + cw].reshape(-1, 3)
    if len(region) > REF_PIXELS:
        region = region[rng.choice(len(region), REF_PIXELS, replace=False)]
    return region.astype(np.float32) / np.float32(255)


# ----------------------------------------------------------------------------------------------- names
class _Namer:
    """File names in each sub-dataset's style: c100300 (HCOCO, COCO-like mask ids), a0001 (HAdobe5k),
    f12 (HFlickr), d18897-20120428-164138 (Hday2night, with hyphens)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.count = {s: 0 for s in SUBSETS}
        self.used: set[str] = set()

    def real(self, subset: str) -> str:
        while True:
            self.count[subset] += 1
            n = self.count[subset]
            if subset == 'HCOCO':
                name = f'c{int(self.rng.integers(100000, 600000))}'
            elif subset == 'HAdobe5k':
                name = f'a{n:04d}'
            elif subset == 'HFlickr':
                name = f'f{n}'
            else:
                day = f'2012{int(self.rng.integers(1, 13)):02d}{int(self.rng.integers(1, 29)):02d}'
                clock = f'{int(self.rng.integers(0, 24)):02d}{int(self.rng.integers(0, 60)):02d}' \
                        f'{int(self.rng.integers(0, 60)):02d}'
                name = f'd{int(self.rng.integers(10000, 30000))}-{day}-{clock}'
            if name not in self.used:
                self.used.add(name)
                return name

    def mask_ids(self, subset: str, n: int) -> list[str]:
        if subset == 'HCOCO':
            ids = self.rng.choice(np.arange(100000, 2000000), size=n, replace=False)
            return [str(int(i)) for i in ids]
        return [str(i + 1) for i in range(n)]


# ----------------------------------------------------------------------------------------------- build
@dataclass
class BuildResult:
    """What :func:`build_dataset` wrote."""

    root: Path
    counts: dict[str, dict[str, int]]  # split -> subset -> composites
    train_photos: list[str]
    test_photos: list[str]
    n_real: int
    n_masks: int
    seconds: float


def parse_subset_weights(text: str) -> dict[str, float]:
    """``'HCOCO=0.6,HAdobe5k=0.3,...'`` → weights (missing sub-datasets get 0); ValueError if malformed."""
    weights = {s: 0.0 for s in SUBSETS}
    for part in filter(None, (p.strip() for p in text.split(','))):
        name, sep, value = part.partition('=')
        if not sep or name.strip() not in weights:
            raise ValueError(f'--subset_weights: expected <Sub>=<weight> with Sub in {", ".join(SUBSETS)}, '
                             f'got {part!r}')
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f'--subset_weights: {value!r} is not a number') from None
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError('--subset_weights: weights must be non-negative and not all zero')
    return weights


def _assign_subsets(n: int, weights: dict[str, float], rng: np.random.Generator) -> list[str]:
    """One sub-dataset per real image: each once (when n allows) in a random order, the rest by weight."""
    order = list(SUBSETS)
    rng.shuffle(order)
    names = order[:n]
    p = np.array([weights[s] for s in SUBSETS])
    names += [SUBSETS[i] for i in rng.choice(len(SUBSETS), size=max(0, n - len(SUBSETS)), p=p / p.sum())]
    rng.shuffle(names)
    return names


def _save_jpeg(pixels: np.ndarray, path: Path, quality: int) -> None:
    # 4:4:4 (no chroma subsampling): 8×8 blocks that the mask does not touch decode identically in both
    Image.fromarray(pixels).save(path, format='JPEG', quality=quality, subsampling=0)


def build_dataset(out: str | Path, photos: Optional[list[Photo]] = None, seed: int = 0, per_photo: int = 8,
                  views: int = 2, per_mask: int = 2, test_photos: int = 2, fg_min: float = 0.05,
                  fg_max: float = 0.5, max_side: int = 0, large_side: int = 1600,
                  subset_weights: Optional[dict[str, float]] = None, jpeg_quality: int = 95,
                  min_change: float = 6.0, max_change: float = 45.0, view_jitter: float = 0.0) -> BuildResult:
    """Write an iHarmony4-layout dataset under ``out`` (which must be empty or new).

    Args:
        out: the dataset root to create.
        photos: the source photos (default: :func:`skimage_photos`); those with ``masks`` use them; ``gray``
            ones go to the training split and are coloured per real image.
        seed: the one seed of every random choice (same seed, same files).
        per_photo: composites made from each photo.
        views: real images cut from each photo (at most ``per_photo``).
        per_mask: composites per foreground mask (iHarmony4 has several per mask in HAdobe5k, Hday2night).
        test_photos: photos held out for the test split.
        fg_min: smallest foreground area of the generated masks, as a fraction of the image.
        fg_max: largest foreground area, likewise.
        max_side: cap on the long side of the real images (0: none).
        large_side: long side of the HAdobe5k real images (0: their own size).
        subset_weights: the mix of sub-datasets beyond one real image each (default: iHarmony4's).
        jpeg_quality: JPEG quality of real images and composites.
        min_change: the least mean absolute change of a composite's foreground, in grey levels.
        max_change: the largest one (iHarmony4's composite foregrounds differ by about 37 levels RMS).
        view_jitter: strength of the random global colour change of every training real image (0: none).

    Raises:
        ValueError: bad arguments, or ``out`` is not empty.
    """
    t0 = time.perf_counter()
    out = Path(out)
    photos = skimage_photos() if photos is None else photos
    weights = subset_weights or {k: float(v) for k, v in IHARMONY4_TRAIN.items()}
    if per_photo < 1 or views < 1 or per_mask < 1:
        raise ValueError('--per_photo, --views and --per_mask must be at least 1')
    colour = [i for i, p in enumerate(photos) if not p.gray]  # greyscale photos are training-only
    most_test = len(colour) - (len(colour) == len(photos))  # without greyscale photos, one colour photo trains
    if not 1 <= test_photos <= most_test:
        raise ValueError(f'--test_photos {test_photos}: with {len(colour)} colour photos '
                         f'({len(photos) - len(colour)} greyscale) it must be 1..{most_test} '
                         '(both splits need a photo)')
    if view_jitter < 0:
        raise ValueError(f'--view_jitter {view_jitter} must be >= 0')
    if not 0 < fg_min < fg_max < 1:
        raise ValueError(f'--fg_min {fg_min} and --fg_max {fg_max}: need 0 < fg_min < fg_max < 1')
    if fg_min < IHARMONY4_FG_RANGE[0] or fg_max > IHARMONY4_FG_RANGE[1]:
        logger.warning('foregrounds of %.0f%%..%.0f%%: iHarmony4 keeps them between 1%% and 90%% of the image',
                       100 * fg_min, 100 * fg_max)
    if not 0 <= min_change < max_change:
        raise ValueError(f'--min_change {min_change} and --max_change {max_change}: need 0 <= min < max')
    if max_side and max_side < 64:
        raise ValueError(f'--max_side {max_side} is too small (at least 64, or 0 for no cap)')
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f'--out {out} exists and is not an empty folder; choose a new one')

    master = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    order = master.permutation(len(colour))
    split_of = {i: 'train' for i in range(len(photos))}
    split_of.update({colour[int(j)]: 'test' for k, j in enumerate(order) if k >= len(colour) - test_photos})
    # every real image: (photo index, view index); sub-datasets assigned per split
    reals = {'train': [], 'test': []}
    n_views = min(views, per_photo)
    for i in range(len(photos)):
        reals[split_of[i]] += [(i, v) for v in range(n_views)]
    subset_of = {}
    for split in ('train', 'test'):
        for key, sub in zip(reals[split], _assign_subsets(len(reals[split]), weights, master)):
            subset_of[key] = sub
    namer = _Namer(master)

    for sub in SUBSETS:
        for d in ('composite_images', 'masks', 'real_images'):
            (out / sub / d).mkdir(parents=True, exist_ok=True)
    lines: dict[str, dict[str, list[str]]] = {s: {sub: [] for sub in SUBSETS} for s in ('train', 'test')}
    manifest = []
    n_masks = 0
    for i, photo in enumerate(photos):
        split = split_of[i]
        pool = [j for j in range(len(photos)) if split_of[j] == split and j != i] or [i]
        for v in range(n_views):
            rng = np.random.default_rng(np.random.SeedSequence([seed, 1, i, v]))
            sub = subset_of[(i, v)]
            n_comp = per_photo // n_views + (1 if v < per_photo % n_views else 0)
            if n_comp == 0:
                continue
            large = large_side if (sub == 'HAdobe5k' and large_side) else None
            view = plan_view(photo.pixels.shape[:2], rng, first=v == 0, long_side=large, max_side=max_side,
                             whole=bool(photo.masks))
            real = apply_view(photo.pixels, view)
            if split == 'train' and (view_jitter > 0 or photo.gray):
                real = recolour_view(real, rng, view_jitter, photo.gray)
            h, w = real.shape[:2]
            real_name = namer.real(sub)
            _save_jpeg(real, out / sub / 'real_images' / f'{real_name}.jpg', jpeg_quality)
            n_mask = math.ceil(n_comp / per_mask)
            mask_ids = namer.mask_ids(sub, n_mask)
            made = 0
            for j, mask_id in enumerate(mask_ids):
                mask = None
                if photo.masks:
                    cand = apply_view_mask(photo.masks[(v * n_mask + j) % len(photo.masks)], view)
                    if cand.any():
                        mask = cand
                    else:
                        logger.warning('a mask of %s is empty in its view; a generated mask replaces it', photo.name)
                if mask is None:
                    mask = generate_mask(h, w, fg_min, fg_max, rng)
                n_masks += 1
                mask_name = f'{real_name}_{mask_id}'
                Image.fromarray(mask.astype(np.uint8) * 255).save(out / sub / 'masks' / f'{mask_name}.png')
                for k in range(1, min(per_mask, n_comp - made) + 1):
                    ref_photo = photos[pool[int(rng.integers(len(pool)))]].pixels
                    comp, desc, change = make_composite(real, mask, sub, rng, reference_pixels(ref_photo, rng),
                                                        min_change, max_change)
                    comp_name = f'{mask_name}_{k}.jpg'
                    _save_jpeg(comp, out / sub / 'composite_images' / comp_name, jpeg_quality)
                    lines[split][sub].append(comp_name)
                    manifest.append({
                        'split': split, 'subset': sub, 'composite': f'{sub}/composite_images/{comp_name}',
                        'mask': f'{sub}/masks/{mask_name}.png', 'real': f'{sub}/real_images/{real_name}.jpg',
                        'photo': photo.name, 'view_box': ' '.join(map(str, view.box)), 'size': f'{w}x{h}',
                        'flip': int(view.flip), 'fg_fraction': f'{mask.mean():.4f}', 'recipe': desc,
                        'mean_change': f'{change:.2f}'})
                    made += 1

    for split in ('train', 'test'):
        all_lines = []
        for sub in SUBSETS:
            names = sorted(lines[split][sub])
            (out / sub / f'{sub}_{split}.txt').write_text(''.join(n + '\n' for n in names))
            all_lines += [f'{sub}/composite_images/{n}' for n in names]
        (out / f'IHD_{split}.txt').write_text(''.join(n + '\n' for n in all_lines))
    with open(out / 'synthetic_manifest.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(manifest[0]))
        writer.writeheader()
        writer.writerows(manifest)
    counts = {s: {sub: len(lines[s][sub]) for sub in SUBSETS} for s in ('train', 'test')}
    return BuildResult(out, counts, sorted(photos[i].name for i in split_of if split_of[i] == 'train'),
                       sorted(photos[i].name for i in split_of if split_of[i] == 'test'),
                       len(namer.used), n_masks, time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--out', required=True, help='dataset root to create (must be new or empty)')
    p.add_argument('--photos', default='', help="folder of photos (default: scikit-image's colour photographs)")
    p.add_argument('--masks', default='', help='folder of foreground masks named <photo>.png or <photo>_<k>.png '
                                               '(white = foreground); photos without one get generated masks')
    p.add_argument('--seed', type=int, default=0, help='seed of every random choice')
    p.add_argument('--per_photo', type=int, default=8, help='composites per photo')
    p.add_argument('--views', type=int, default=2, help='real images cut from each photo')
    p.add_argument('--per_mask', type=int, default=2, help='composites per foreground mask')
    p.add_argument('--test_photos', type=int, default=2, help='photos held out for the test split')
    p.add_argument('--fg_min', type=float, default=0.05, help='smallest generated foreground (fraction of area)')
    p.add_argument('--fg_max', type=float, default=0.5, help='largest generated foreground (fraction of area)')
    p.add_argument('--max_side', type=int, default=0, help='cap on the long side of real images (0: none)')
    p.add_argument('--large_side', type=int, default=1600, help='long side of HAdobe5k real images (0: own size)')
    p.add_argument('--subset_weights', default='',
                   help="mix of sub-datasets, e.g. 'HCOCO=1,HAdobe5k=1,HFlickr=1,Hday2night=1' (default: "
                        "iHarmony4's training counts); each gets at least one real image per split if possible")
    p.add_argument('--jpeg_quality', type=int, default=95, help='JPEG quality of real images and composites')
    p.add_argument('--min_change', type=float, default=6.0,
                   help="least mean absolute change of a composite's foreground, in grey levels")
    p.add_argument('--max_change', type=float, default=45.0,
                   help="largest mean absolute change of a composite's foreground, in grey levels")
    p.add_argument('--view_jitter', type=float, default=0.0,
                   help='strength of a random global colour change (exposure, white balance, tone, saturation, '
                        'hue) of every training real image, against memorizing the photos\' colours (0: none)')
    p.add_argument('--gray_photos', action='store_true',
                   help="add scikit-image's greyscale photographs (%s) to the training split, each real image "
                        'cut from them coloured by a random split toning' % ', '.join(SKIMAGE_GRAY_PHOTOS))
    p.add_argument('--verbose', action='store_true', help='debug logging and full tracebacks')
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    photos = load_photos(args.photos) if args.photos else skimage_photos()
    if args.gray_photos:
        photos += skimage_gray_photos()
    if args.masks:
        attach_user_masks(photos, args.masks)
    weights = parse_subset_weights(args.subset_weights) if args.subset_weights else None
    res = build_dataset(args.out, photos, seed=args.seed, per_photo=args.per_photo, views=args.views,
                        per_mask=args.per_mask, test_photos=args.test_photos, fg_min=args.fg_min,
                        fg_max=args.fg_max, max_side=args.max_side, large_side=args.large_side,
                        subset_weights=weights, jpeg_quality=args.jpeg_quality, min_change=args.min_change,
                        max_change=args.max_change, view_jitter=args.view_jitter)
    for split in ('train', 'test'):
        c = res.counts[split]
        logger.info('%-5s %4d composites (%s)', split, sum(c.values()), ', '.join(f'{k} {v}' for k, v in c.items()))
    logger.info('%d real images, %d masks from %d training photos (%s) and %d test photos (%s) in %.1f s',
                res.n_real, res.n_masks, len(res.train_photos), ', '.join(res.train_photos), len(res.test_photos),
                ', '.join(res.test_photos), res.seconds)
    logger.info('wrote %s; check it with: python scripts/check_dataset.py --dataset_root %s', res.root, res.root)
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
