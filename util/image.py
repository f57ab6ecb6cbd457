"""Conversions between network tensors and uint8 images, and lossless image saving."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from PIL import Image


def output_to_uint8(images: torch.Tensor) -> np.ndarray:
    """Turn tensors in [-1, 1] (B,3,H,W or 3,H,W) into uint8 images (B,H,W,3 or H,W,3) as the released
    ``tensor2im`` did.

    ``(x + 1) / 2 * 255`` in float32, then a cast to uint8 that TRUNCATES (129.9 becomes 129) rather than
    rounds. The released metrics were computed on images made this way from the output AND from the real and
    composite tensors, so a loaded image comes back one level lower on many pixels (u / 127.5 - 1 mapped back
    lands just below u). Values are clamped to [-1, 1] first (a no-op after Tanh, but it keeps amp or a
    hand-made tensor from wrapping around).
    """
    x = images.detach().to('cpu', torch.float32).clamp(-1.0, 1.0)
    x = (x + 1.0) / 2.0 * 255.0
    return _channels_last(x.to(torch.uint8))


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] → float32 [-1, 1] as x / 127.5 - 1, bit-identical to the released ToTensor + Normalize(0.5,
    0.5) (``tests/test_released_protocol.py`` compares every level, on the CPU)."""
    if images.dtype != torch.uint8:
        raise TypeError(f'expected uint8 images, got {images.dtype}')
    return images.float() / 127.5 - 1.0


def input_to_uint8(images: torch.Tensor) -> np.ndarray:
    """The loaded uint8 images (B,H,W,3 or H,W,3) of the dataset's uint8 tensors, or of tensors in [-1, 1]
    normalized with ``u / 127.5 - 1``.

    Rounding undoes the normalization exactly: these are the loaded pixels (the ground truth of the deploy
    protocol, and what the results page shows).
    """
    if images.dtype == torch.uint8:
        return _channels_last(images.detach().cpu())
    x = images.detach().to('cpu', torch.float32)
    x = ((x + 1.0) * 127.5).round().clamp(0, 255)
    return _channels_last(x.to(torch.uint8))


def mask_to_uint8(mask: torch.Tensor) -> np.ndarray:
    """A {0, 1} mask (B,1,H,W or 1,H,W) as uint8 images (B,H,W or H,W) with 255 for the foreground."""
    m = (mask.detach().to('cpu', torch.float32) > 0.5).to(torch.uint8) * 255
    return m.squeeze(-3).numpy()


def crop_padding(images: np.ndarray, pad: Sequence[int] | torch.Tensor) -> np.ndarray:
    """Undo the reflect padding of ``--preprocess none`` on a (B,H,W[,C]) array; pad = [left, top, right, bottom]."""
    left, top, right, bottom = (int(p) for p in pad)
    return images[:, top:images.shape[1] - bottom, left:images.shape[2] - right]


def _channels_last(x: torch.Tensor) -> np.ndarray:
    if x.dim() not in (3, 4):
        raise ValueError(f'expected image tensors of shape (3,H,W) or (B,3,H,W), got {tuple(x.shape)}')
    return np.ascontiguousarray(x.movedim(-3, -1).numpy())


def save_png(image: np.ndarray, path: str) -> None:
    """Save a uint8 image (H,W,3 RGB or H,W grey) as a lossless PNG, creating the folder if needed.

    zlib level 1: about twice as fast as PIL's default level 6 for files only a few percent larger.
    """
    if image.dtype != np.uint8:
        raise ValueError(f'{path}: expected a uint8 image, got {image.dtype}')
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(image).save(path, format='PNG', compress_level=1)
