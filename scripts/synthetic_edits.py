"""The pixel edits of ``make_synthetic_dataset.py``: foreground masks, composites and recoloured real images.

* :func:`generate_mask`: an object-like foreground mask (smooth star-shaped contour, ellipse, union of ellipses
  or blob) of a chosen area;
* :func:`make_composite`: a real image whose foreground colours are changed by a sub-dataset's recipe
  (:func:`edit_foreground`: Reinhard colour transfer or histogram matching from :func:`reference_pixels` of
  another photo, a retouch, a day/night change), the background untouched;
* :func:`recolour_view`: a global colour change of a whole real image (and the colouring of greyscale ones).

Every random choice comes from the generator passed in, in a fixed order: same generator state, same pixels.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np
from PIL import Image

SUBSETS = ('HCOCO', 'HAdobe5k', 'HFlickr', 'Hday2night')  # the order of data.iharmony4_dataset.SUBSETS
MASK_WORK_SIDE = 384  # masks are drawn at this long side, then upsampled smoothly
MAX_SHAPE_TRIES = 20
MAX_RECIPE_TRIES = 10
REF_PIXELS = 20000


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


# ----------------------------------------------------------------------------------------------- real images
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
