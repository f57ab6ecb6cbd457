"""The released BargainNet test, one image at a time, written plainly: a reference for the tests.

What the released test code computed for every line of ``IHD_test.txt``:

1. composite, real and mask read by OpenCV (``cv2.imread``, default flags), composite and real BGR → RGB;
   the network mask is ``(png[..., 0] / 255).astype(uint8)``: 1 only where the PNG's first channel is 255;
2. all three resized to S × S by ``cv2.resize(..., INTER_LINEAR)`` (the mask as an image, staying {0, 1});
3. composite and real to tensors by torchvision's ToTensor + Normalize(0.5, 0.5), the mask as float32;
4. the background code from the REAL image, ``z_b = E(real, 1 - m)``, and ``harm = G(comp, m, z_b)``;
   networks in training mode unless ``--eval`` (BatchNorm then normalizes with the single image's own
   statistics), batch size 1, under ``torch.no_grad``;
5. ``tensor2im``: ``((t + 1) / 2 * 255).astype(uint8)``, a truncation, of the output and of the real tensor;
6. on float32 copies of those: MSE = skimage ``mean_squared_error`` over all pixels and channels;
   fMSE = ``mean_squared_error(out * m, real * m) * S * S / N_fg`` with m = PIL's ``convert('1')`` of the
   mask PNG resized to S × S by PIL, as H×W×1 uint8 broadcast over the channels, N_fg = Σ m over H×W
   (an MSE over H·W·3 values times H·W / N_fg); PSNR = skimage ``peak_signal_noise_ratio(real, out,
   data_range=out.max() - out.min())``.

This module is a test helper: it imports neither test.py nor the project's metrics or dataset.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np
import torch
from PIL import Image
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio
from torchvision import transforms

TO_TENSOR = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])


def listed_files(dataset_root: str | os.PathLike) -> list[tuple[str, str, str, str]]:
    """(subset, composite, mask, real) paths of every line of ``IHD_test.txt``, derived as the released code
    did: ``<Sub>/composite_images/<real>_<maskid>_<k>.jpg`` → ``<Sub>/masks/<real>_<maskid>.png`` and
    ``<Sub>/real_images/<real>.jpg``."""
    root = Path(dataset_root)
    files = []
    for line in (root / 'IHD_test.txt').read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        subset, _, name = line.split('/')
        parts = name.rsplit('.', 1)[0].split('_')
        real, mask = '_'.join(parts[:-2]), '_'.join(parts[:-1])
        files.append((subset, str(root / line), str(root / subset / 'masks' / f'{mask}.png'),
                      str(root / subset / 'real_images' / f'{real}.jpg')))
    return files


def released_inputs(comp_path: str, mask_path: str, real_path: str, load_size: int = 256) -> dict[str, Any]:
    """The network inputs and the fMSE mask of one composite, as the released test code made them.

    Returns:
        ``comp``, ``real``: float32 tensors (1, 3, S, S) in [-1, 1]; ``mask``: float32 (1, 1, S, S) in {0, 1};
        ``mask_metric``: uint8 array (S, S) in {0, 1}.
    """
    comp = cv2.cvtColor(cv2.imread(comp_path), cv2.COLOR_BGR2RGB)
    real = cv2.cvtColor(cv2.imread(real_path), cv2.COLOR_BGR2RGB)
    png = cv2.imread(mask_path)
    mask = (png[..., 0] / 255).astype(np.uint8)
    size = (load_size, load_size)
    comp, real, mask = (cv2.resize(a, size, interpolation=cv2.INTER_LINEAR) for a in (comp, real, mask))
    metric = Image.open(mask_path).convert('1').resize(size, Image.BICUBIC)  # mode '1': nearest in fact
    return {'comp': TO_TENSOR(comp)[None], 'real': TO_TENSOR(real)[None],
            'mask': torch.from_numpy(mask.astype(np.float32))[None, None],
            'mask_metric': np.array(metric, dtype=np.uint8)}


def tensor2im(t: torch.Tensor) -> np.ndarray:
    """H×W×3 uint8 image of the first tensor of a batch in [-1, 1]: ``((t + 1) / 2 * 255)`` truncated."""
    a = t[0].detach().cpu().float().numpy()
    return ((np.transpose(a, (1, 2, 0)) + 1) / 2.0 * 255.0).astype(np.uint8)


def released_metrics(out: np.ndarray, real: np.ndarray, mask_metric: np.ndarray) -> dict[str, float]:
    """MSE, PSNR (data range of the output) and fMSE of uint8 H×W×3 images, the fMSE mask H×W in {0, 1}."""
    out, real = out.astype(np.float32), real.astype(np.float32)
    m = mask_metric.astype(np.uint8)[..., None]
    h, w = mask_metric.shape
    with np.errstate(divide='ignore', invalid='ignore'):
        fmse = mean_squared_error(out * m, real * m) * h * w / np.sum(m)
        psnr = peak_signal_noise_ratio(real, out, data_range=out.max() - out.min())
    return {'mse': float(mean_squared_error(out, real)), 'psnr': float(psnr), 'fmse': float(fmse)}


def released_evaluate(dataset_root: str | os.PathLike, netG: Optional[torch.nn.Module],
                      netE: Optional[torch.nn.Module], per_image: bool, load_size: int = 256,
                      max_images: Optional[int] = None) -> list[dict[str, Any]]:
    """Run the released per-image test loop over ``IHD_test.txt`` of ``dataset_root``.

    Args:
        dataset_root: an iHarmony4-layout folder (real images ``.jpg``, masks ``.png``).
        netG: the generator, called ``netG(comp, mask, code)``; None scores the composite itself (the
            released composite baseline: ``tensor2im`` of the composite tensor as the output).
        netE: the domain code extractor, called ``netE(image, mask)`` → (1, 16, 1, 1).
        per_image: True for the released default (no ``--eval``): networks in training mode, BatchNorm on
            each image's own statistics and dropout active (use ``--no_dropout`` networks to compare
            results); False for ``--eval`` (running statistics, no dropout).
        load_size: S, the side the images are resized to.
        max_images: the first lines only.

    Returns:
        One dict per line, in list order: ``image`` (the composite's file stem), ``subset``, ``output``
        (the harmonized uint8 H×W×3 image, as saved), ``mse``, ``psnr``, ``fmse``.
        The networks passed in are not modified (copies run, so training mode leaves their BatchNorm
        running statistics alone); they stay on their device, the inputs are moved there.
    """
    if netG is not None:
        netG, netE = copy.deepcopy(netG).train(per_image), copy.deepcopy(netE).train(per_image)
        device = next(netG.parameters()).device
    rows = []
    for subset, comp_path, mask_path, real_path in listed_files(dataset_root)[:max_images]:
        x = released_inputs(comp_path, mask_path, real_path, load_size)
        if netG is None:
            out = tensor2im(x['comp'])
        else:
            comp, real, mask = (x[k].to(device) for k in ('comp', 'real', 'mask'))
            with torch.no_grad():
                out = tensor2im(netG(comp, mask, netE(real, 1 - mask)))
        row = {'image': Path(comp_path).stem, 'subset': subset, 'output': out}
        row.update(released_metrics(out, tensor2im(x['real']), x['mask_metric']))
        rows.append(row)
    return rows
