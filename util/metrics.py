"""Harmonization metrics on uint8 images: MSE, PSNR, fMSE, fPSNR, SSIM, and their group means.

Every function takes a batch: images (B,H,W,3) uint8, masks (B,H,W) bool. Squared errors are integers and
their sums are taken in int64, so they are exact and do not depend on how images are batched.
"""
from __future__ import annotations

import math
from typing import Iterable, Optional, Sequence

import numpy as np
from skimage.metrics import structural_similarity

# MSE = 0 (a perfect image) would make PSNR infinite. We clamp the MSE to this value first, so a perfect
# image gets a large but finite PSNR: 10·log10(255² / 1e-10) ≈ 148.13 dB with the peak 255.
MSE_EPS = 1e-10

# With --psnr_peak dynamic a constant output has the range max − min = 0; we use 1 (the smallest non-zero
# range of uint8 data) instead, so that PSNR stays finite.
MIN_DYNAMIC_PEAK = 1.0

SUBSET_ORDER = ('HCOCO', 'HAdobe5k', 'HFlickr', 'Hday2night')

# Foreground ratio bands: [lower, upper) of N_fg / (H·W); the last one includes 1.
RATIO_BANDS = (('0-5%', 0.0, 0.05), ('5-15%', 0.05, 0.15), ('15-100%', 0.15, math.inf))

METRIC_KEYS = ('mse', 'psnr', 'fmse', 'fpsnr', 'ssim')


def _check_batch(out: np.ndarray, real: np.ndarray, mask: Optional[np.ndarray] = None) -> None:
    if out.dtype != np.uint8 or real.dtype != np.uint8:
        raise ValueError(f'metrics take uint8 images, got {out.dtype} and {real.dtype}')
    if out.ndim != 4 or out.shape != real.shape or out.shape[-1] != 3:
        raise ValueError(f'metrics take two (B,H,W,3) batches of the same shape, got {out.shape} and {real.shape}')
    if mask is not None and mask.shape != out.shape[:3]:
        raise ValueError(f'mask of shape {mask.shape} does not match images of shape {out.shape}')


def squared_errors(out: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Per-pixel squared error summed over the 3 channels: (B,H,W) int32 (at most 3·255² = 195075)."""
    diff = out.astype(np.int32) - real
    sq = diff * diff
    return sq[..., 0] + sq[..., 1] + sq[..., 2]


def _image_sums(values: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Exact int64 sum of each image of (B,H,W) ``values``, over ``mask`` only when given."""
    if mask is not None:
        values = np.where(mask, values, 0)
    return values.reshape(values.shape[0], -1).sum(axis=1, dtype=np.int64)


def mse(out: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Mean squared error over all pixels and channels of each image: (B,) float64."""
    _check_batch(out, real)
    return _image_sums(squared_errors(out, real)) / float(out[0].size)


def _foreground_mse(sq: np.ndarray, mask: np.ndarray) -> np.ndarray:
    sse = _image_sums(sq, mask)
    n_fg = _image_sums(mask)
    result = np.full(sq.shape[0], np.nan)
    nonempty = n_fg > 0
    result[nonempty] = sse[nonempty] / (3.0 * n_fg[nonempty])
    return result


def foreground_mse(out: np.ndarray, real: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """fMSE = Σ_fg (out − real)² / (3·N_fg) of each image: (B,) float64, NaN where the foreground is empty."""
    _check_batch(out, real, mask)
    return _foreground_mse(squared_errors(out, real), mask.astype(bool))


def foreground_ratio(mask: np.ndarray) -> np.ndarray:
    """N_fg / (H·W) of each mask (B,H,W): (B,) float64."""
    mask = mask.astype(bool)
    return _image_sums(mask) / float(mask[0].size)


def psnr_peaks(out: np.ndarray, peak: str | float) -> np.ndarray:
    """The PSNR peak R of each image: 255 (``'255'``), or ``'dynamic'``: out.max() − out.min() per image.

    ``dynamic`` is what the released code used (scikit-image's ``data_range`` set to the output's range); a
    range of 0 becomes :data:`MIN_DYNAMIC_PEAK`.
    """
    n = out.shape[0]
    if peak == 'dynamic':
        flat = out.reshape(n, -1)
        r = flat.max(axis=1).astype(np.float64) - flat.min(axis=1).astype(np.float64)
        return np.maximum(r, MIN_DYNAMIC_PEAK)
    value = float(peak)
    if not value > 0:
        raise ValueError(f'PSNR peak must be positive or dynamic, got {peak}')
    return np.full(n, value)


def psnr(mse_values: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """10·log10(R² / MSE), with the MSE clamped to :data:`MSE_EPS` so that it is never infinite; NaN stays NaN."""
    mse_values = np.asarray(mse_values, dtype=np.float64)
    with np.errstate(invalid='ignore'):
        clamped = np.where(np.isnan(mse_values), np.nan, np.maximum(mse_values, MSE_EPS))
    return 10.0 * np.log10(np.asarray(peaks, dtype=np.float64) ** 2 / clamped)


def ssim(out: np.ndarray, real: np.ndarray) -> np.ndarray:
    """SSIM of each image (scikit-image defaults: 7×7 uniform window, RGB channels averaged): (B,) float64."""
    _check_batch(out, real)
    return np.array([structural_similarity(o, r, channel_axis=-1, data_range=255) for o, r in zip(out, real)],
                    dtype=np.float64)


def image_metrics(out: np.ndarray, real: np.ndarray, mask: np.ndarray, psnr_peak: str | float = '255',
                  with_ssim: bool = True) -> dict[str, np.ndarray]:
    """All per-image metrics of a batch: fg_ratio, mse, psnr, fmse, fpsnr (same peak as psnr), ssim.

    Args:
        out: results, (B,H,W,3) uint8.
        real: ground truth, (B,H,W,3) uint8.
        mask: foreground, (B,H,W) bool (the mask resized nearest-neighbour).
        psnr_peak: ``'255'`` or ``'dynamic'`` (see :func:`psnr_peaks`).
        with_ssim: also compute SSIM (the slowest metric).

    Returns:
        One (B,) float64 array per metric; fmse and fpsnr are NaN where the foreground is empty.
    """
    _check_batch(out, real, mask)
    mask = mask.astype(bool)
    peaks = psnr_peaks(out, psnr_peak)
    sq = squared_errors(out, real)
    result = {'fg_ratio': foreground_ratio(mask), 'mse': _image_sums(sq) / float(out[0].size)}
    result['psnr'] = psnr(result['mse'], peaks)
    result['fmse'] = _foreground_mse(sq, mask)
    result['fpsnr'] = psnr(result['fmse'], peaks)
    if with_ssim:
        result['ssim'] = ssim(out, real)
    return result


def ratio_band(fg_ratio: float) -> str:
    """The name of the foreground ratio band ('0-5%', '5-15%', '15-100%') that ``fg_ratio`` falls in."""
    for name, low, high in RATIO_BANDS:
        if low <= fg_ratio < high:
            return name
    raise ValueError(f'foreground ratio {fg_ratio} is outside [0, 1]')


def group_means(rows: Sequence[dict], keys: Iterable[str] = METRIC_KEYS, prefix: str = '') -> dict[str, float]:
    """Count and mean of each metric over ``rows``; NaN values (empty foregrounds) are left out of the mean.

    ``n`` counts all rows; ``n_fg`` those whose fMSE is defined. A metric with no defined value is NaN. The
    value of metric ``key`` is read from ``row[prefix + key]`` (``prefix='comp_'``: the input composite's).
    """
    result: dict[str, float] = {'n': len(rows)}
    for key in keys:
        values = np.array([r[prefix + key] for r in rows], dtype=np.float64)
        defined = values[~np.isnan(values)]
        result[key] = float(defined.mean()) if defined.size else math.nan
        if key == 'fmse':
            result['n_fg'] = int(defined.size)
    return result


def summarize(rows: Sequence[dict], keys: Iterable[str] = METRIC_KEYS, prefix: str = '') -> dict[str, dict[str, float]]:
    """Means over all images, per sub-dataset (iHarmony4 order, then others) and per foreground ratio band.

    Rows need ``subset``, ``fg_ratio`` and the metric keys (with ``prefix``, see :func:`group_means`).
    Sub-datasets without images are left out; the three ratio bands are always there (with ``n`` = 0 and NaN
    means when empty).
    """
    keys = tuple(keys)
    groups: dict[str, dict[str, float]] = {'all': group_means(rows, keys, prefix)}
    present = {r['subset'] for r in rows}
    subsets = [s for s in SUBSET_ORDER if s in present] + sorted(present - set(SUBSET_ORDER))
    for subset in subsets:
        groups[subset] = group_means([r for r in rows if r['subset'] == subset], keys, prefix)
    for name, _, _ in RATIO_BANDS:
        groups[f'fg {name}'] = group_means([r for r in rows if ratio_band(r['fg_ratio']) == name], keys, prefix)
    return groups


def json_ready(groups: dict[str, dict[str, float]]) -> dict[str, dict[str, Optional[float]]]:
    """The groups of :func:`summarize` with undefined means (NaN) as None, for JSON (``null``)."""
    return {name: {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in g.items()}
            for name, g in groups.items()}


METRIC_TITLES = {'mse': 'MSE', 'psnr': 'PSNR', 'fmse': 'fMSE', 'fpsnr': 'fPSNR', 'ssim': 'SSIM'}


def format_value(key: str, value: Optional[float]) -> str:
    """A mean as shown in tables: 4 decimals for SSIM, 2 for the others, '-' when undefined (NaN or None)."""
    if value is None or math.isnan(value):
        return '-'
    return f'{value:.{4 if key == "ssim" else 2}f}'


def format_table(groups: dict[str, dict[str, float]]) -> str:
    """The groups of :func:`summarize` as a Markdown table: n, MSE, PSNR, fMSE, fPSNR, SSIM ('-': no value)."""
    lines = ['| images | n | ' + ' | '.join(METRIC_TITLES.values()) + ' |', '|---|---:|---:|---:|---:|---:|---:|']
    for name, g in groups.items():
        cells = [format_value(k, g[k]) for k in METRIC_KEYS]
        lines.append(f'| {name} | {int(g["n"])} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def table_cells(groups: dict[str, dict[str, float]], composite: Optional[dict[str, dict[str, float]]] = None,
                label: str = 'harmonized') -> tuple[list[list], list[list[str]]]:
    """The groups of :func:`summarize` as header and body cells of a table (see ``util.html.HTML.add_table``).

    With ``composite`` (the same groups computed on the input composites), every metric gets two columns side
    by side: ``label`` and ``composite``.

    Returns:
        Header rows (a cell is its text or (text, columns spanned, rows spanned)) and one body row per group: its
        name, the image count, then the metrics.
    """
    if composite is None:
        header = [['images', 'n', *METRIC_TITLES.values()]]
    else:
        header = [[('images', 1, 2), ('n', 1, 2), *((title, 2) for title in METRIC_TITLES.values())],
                  [cell for _ in METRIC_KEYS for cell in (label, 'composite')]]
    body = []
    for name, g in groups.items():
        row = [name, str(int(g['n']))]
        for key in METRIC_KEYS:
            row.append(format_value(key, g[key]))
            if composite is not None:
                row.append(format_value(key, composite[name][key]))
        body.append(row)
    return header, body
