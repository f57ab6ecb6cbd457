"""What the harmony score and the harmonizer take in: composites paired with masks, read, and the usable-mask rule.

* :func:`find_pairs`: the (composite, mask) paths that ``--image/--mask`` and ``--input_dir`` name.
* :func:`read_image`, :func:`read_mask`, :func:`read_pair`: paths, PIL images or arrays to PIL images.
* :func:`net_mask`: the one definition of a usable mask, shared by ``predict_harmony_score.py``,
  ``scripts/harmonize.py`` and the Python API. The networks see a mask resized to 256×256 (PIL bilinear of the
  8-bit mask); a pixel of the resized mask is foreground when it is at least 128 (0.5 of 255), background
  otherwise. A mask is usable when both are present: at least one foreground pixel (the region to score or
  harmonize) and at least one background pixel (the region the domain code is read from). So a mask grey (128)
  everywhere is all foreground and is refused for its missing background, one grey 127 everywhere is refused
  for its missing foreground, and an object too small to reach 128 anywhere at 256×256 (a few pixels of a large
  photo) is refused as empty.

White (255) is the foreground. Images are paths, PIL images or uint8 H×W×3 arrays; masks are paths, PIL images or
H×W arrays (uint8 0–255, bool, or float in [0, 1]).
"""
from __future__ import annotations

import os
from typing import Sequence, Union

import numpy as np
from PIL import Image

NET_SIZE = 256  # the side the networks run at
FOREGROUND_LEVEL = 128  # a pixel of the resized 8-bit mask at least this bright is foreground (>= 0.5)
IMG_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')  # masks: .png preferred

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]


# ----------------------------------------------------------------------------------------------- reading
def describe(x: object, kind: str) -> str:
    """How messages name an input: its path, or 'the <kind> array' / 'the <kind> image'."""
    if isinstance(x, (str, os.PathLike)):
        return str(x)
    return f'the {kind} image' if isinstance(x, Image.Image) else f'the {kind} array'


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
        raise ValueError(f'mask {describe(mask, "mask")} is {msk.size[0]}x{msk.size[1]} but image '
                         f'{describe(image, "image")} is {img.size[0]}x{img.size[1]}')
    return img, msk


# ----------------------------------------------------------------------------------------------- the mask rule
def resize_to_net(img: Image.Image) -> Image.Image:
    """``img`` at 256×256 with PIL bilinear, which averages when shrinking (what the released scoring did)."""
    return img.resize((NET_SIZE, NET_SIZE), Image.Resampling.BILINEAR)


def inverted(mask: Image.Image) -> Image.Image:
    """255 − ``mask`` (an 'L' image)."""
    return Image.fromarray(255 - np.asarray(mask), 'L')


def net_mask(mask: Image.Image, name: str = 'the mask array') -> np.ndarray:
    """The foreground of ``mask`` at 256×256 as a bool array; ValueError unless the mask is usable.

    Args:
        mask: an 'L' image (see :func:`read_mask`).
        name: how the error names the mask (its path).

    Raises:
        ValueError: no pixel of the resized mask is foreground (>= 128), or none is background (< 128); see the
            module docstring.
    """
    fg = np.asarray(resize_to_net(mask)) >= FOREGROUND_LEVEL
    if not fg.any():
        raise ValueError(f'mask {name} has no foreground at {NET_SIZE}x{NET_SIZE}: no pixel reaches '
                         f'{FOREGROUND_LEVEL} of 255 once the mask is resized to the networks\' size (white = '
                         'foreground)')
    if fg.all():
        raise ValueError(f'mask {name} has no background at {NET_SIZE}x{NET_SIZE}: every pixel is '
                         f'{FOREGROUND_LEVEL} of 255 or more once the mask is resized to the networks\' size')
    return fg


# ----------------------------------------------------------------------------------------------- pairing
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
