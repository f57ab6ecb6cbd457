"""Conversions between network tensors and uint8 images, and lossless image saving."""
from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image


def output_to_uint8(images: torch.Tensor) -> np.ndarray:
    """Turn network outputs (B,3,H,W or 3,H,W, in [-1, 1]) into uint8 images (B,H,W,3 or H,W,3).

    This is the released ``tensor2im``: ``(x + 1) / 2 * 255`` in float32, then a cast to uint8 that
    TRUNCATES (129.9 becomes 129) rather than rounds. The metrics of the paper were computed on images made
    this way, so we keep the truncation. Values are clamped to [-1, 1] first (a no-op after Tanh, but it
    keeps amp or a hand-made tensor from wrapping around).
    """
    x = images.detach().to('cpu', torch.float32).clamp(-1.0, 1.0)
    x = (x + 1.0) / 2.0 * 255.0
    return _channels_last(x.to(torch.uint8))


def input_to_uint8(images: torch.Tensor) -> np.ndarray:
    """Recover the uint8 images (B,H,W,3 or H,W,3) that the dataset normalized with ``u / 127.5 - 1``.

    Rounding undoes the normalization exactly, so the composite and real images are compared as the
    dataset resized them.
    """
    x = images.detach().to('cpu', torch.float32)
    x = ((x + 1.0) * 127.5).round().clamp(0, 255)
    return _channels_last(x.to(torch.uint8))


def mask_to_uint8(mask: torch.Tensor) -> np.ndarray:
    """A {0, 1} mask (B,1,H,W or 1,H,W) as uint8 images (B,H,W or H,W) with 255 for the foreground."""
    m = (mask.detach().to('cpu', torch.float32) > 0.5).to(torch.uint8) * 255
    return m.squeeze(-3).numpy()


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
