"""The real images of ``make_synthetic_dataset.py``: source photos, the user's masks, and views cut from photos.

* :func:`skimage_photos`, :func:`skimage_gray_photos`: the photographs bundled with scikit-image (offline);
  :func:`load_photos`: a folder of the user's photos; :func:`attach_user_masks`: the user's foreground masks;
* :func:`plan_view` chooses a real image in a photo (a non-square window, its output size and mirroring) from
  the random generator it is given; :func:`apply_view` and :func:`apply_view_mask` cut it out of the photo's
  pixels and masks.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

# the colour photographs bundled with scikit-image that load offline (cat is chelsea; the motorcycle's
# right view would leak the left one into the test split, so only the left is used)
SKIMAGE_PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket', 'hubble_deep_field', 'immunohistochemistry',
                  'retina', 'stereo_motorcycle')
# scikit-image's greyscale photographs that load offline (``--gray_photos``: training split only)
SKIMAGE_GRAY_PHOTOS = ('camera', 'coins', 'moon', 'brick', 'grass', 'gravel', 'clock', 'page', 'text', 'cell')
PHOTO_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
ASPECTS = (4 / 3, 3 / 2, 16 / 9, 5 / 4, 3 / 4, 2 / 3, 4 / 5)
MIN_LONG_SIDE = 320


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
    """Every image file directly in ``folder`` (:func:`read_photos`), at least two (a training and a test photo).

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: an unreadable image, two photos with the same name, or fewer than two photos.
    """
    photos = read_photos(folder)
    if len(photos) < 2:
        raise ValueError(f'--photos {folder}: found {len(photos)} usable photo(s) ({", ".join(PHOTO_EXTENSIONS)}); '
                         'at least two are needed (one for training, one for testing)')
    return photos


def read_photos(folder: str | Path) -> list[Photo]:
    """Every image file directly in ``folder`` (sorted by name), upright (EXIF) and converted to RGB; images
    under 64 pixels on a side are skipped with a warning.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: an unreadable image, or two photos with the same name.
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
