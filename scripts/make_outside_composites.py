"""A test set from outside the project: photos no other part of it uses, composites made by other recipes.

The demo dataset (``make_synthetic_dataset.py``) edits foregrounds with its own recipes (Reinhard transfer,
histogram matching, retouches, day/night changes) on scikit-image's photographs. A model that only learned those
edits, or those photos, would look good on the demo's test split and fail elsewhere. This script writes a test
set in iHarmony4's layout that shares neither:

* photos: Grace Hopper's portrait bundled with matplotlib, and the two photographs bundled with scikit-learn
  (``china.jpg``, ``flower.jpg``; CC BY 2.0), or the photos of ``--photos``;
* foregrounds: image regions that follow the photo's own edges (SLIC superpixels grown from a random seed until
  they cover 5–40% of the view), not drawn shapes;
* one sub-dataset per recipe, each applied to the foreground only:

  - ``channel_mix``: a random 3×3 colour matrix with cross-channel terms (another camera's colour response);
  - ``mkl``: Monge–Kantorovich linear colour transfer (means and full RGB covariance) from a region of
    another photo;
  - ``curves``: an independent smooth monotone curve per channel (PCHIP through three moved control points);
  - ``hsv``: hue rotation, saturation and value scaling in HSV;
  - ``cdl``: an ASC CDL grade, per channel slope, offset and power.

Each composite's foreground changes by ``--min_change``–``--max_change`` grey levels on average (recipes are
redrawn until it does); the background is the real image's. Images are JPEG (quality 95, 4:4:4), masks 0/255
PNG; ``IHD_test.txt`` lists every composite and ``composites.csv`` records each recipe. Score a model on it with
test.py (``--dataset_root <out>``); docs/demo.md shows the demo model's numbers.

    python scripts/make_outside_composites.py --out datasets/outside
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / 'scripts'):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from synthetic_photos import PHOTO_EXTENSIONS, read_photos  # noqa: E402
from util.cli import HelpFormatter, run_main, setup_logging  # noqa: E402

RECIPES = ('channel_mix', 'mkl', 'curves', 'hsv', 'cdl')
VIEW_SIDE = 512  # long side of every view
MAX_TRIES = 20


def bundled_photos() -> dict[str, np.ndarray]:
    """Grace Hopper (matplotlib) and china, flower (scikit-learn), as H×W×3 uint8 arrays."""
    from matplotlib import cbook
    try:
        from sklearn.datasets import load_sample_image
    except ImportError:
        raise RuntimeError('the default photos include scikit-learn\'s: pip install -r requirements-dev.txt, or '
                           'give --photos') from None
    with Image.open(cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)) as img:
        photos = {'grace_hopper': np.asarray(img.convert('RGB'))}
    for name in ('china', 'flower'):
        photos[name] = load_sample_image(f'{name}.jpg')
    return photos


def folder_photos(folder: Path) -> dict[str, np.ndarray]:
    """The photos of ``folder``, read as the dataset builder reads ``--photos`` (EXIF upright, RGB)."""
    photos = {p.name: p.pixels for p in read_photos(folder)}
    if not photos:
        raise FileNotFoundError(f'{folder}: no {", ".join(PHOTO_EXTENSIONS)} photos')
    return photos


# ----------------------------------------------------------------------------------------------- views and masks
def random_view(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop (60–100% of each side) resized to a long side of ``VIEW_SIDE``."""
    h, w = photo.shape[:2]
    ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    s = VIEW_SIDE / max(ch, cw)
    crop = Image.fromarray(np.ascontiguousarray(photo[top:top + ch, left:left + cw]))
    return np.asarray(crop.resize((round(cw * s), round(ch * s)), Image.Resampling.LANCZOS))


def region_mask(view: np.ndarray, rng: np.random.Generator, fg_min: float = 0.05,
                fg_max: float = 0.4) -> np.ndarray:
    """Superpixels (SLIC) nearest to a random seed point, added until they cover a random share of the view."""
    from skimage.segmentation import slic

    labels = slic(view, n_segments=int(rng.integers(40, 120)), compactness=10, start_label=0)
    flat, n = labels.ravel(), labels.max() + 1
    count = np.bincount(flat, minlength=n)
    area = count / labels.size
    yy, xx = np.mgrid[0:labels.shape[0], 0:labels.shape[1]]
    cy, cx = (np.bincount(flat, c.ravel(), n) / np.maximum(count, 1) for c in (yy, xx))
    seed = rng.uniform(0.25, 0.75, size=2) * labels.shape
    order = np.argsort(np.hypot(cy - seed[0], cx - seed[1]))
    target = math.exp(rng.uniform(math.log(fg_min), math.log(fg_max)))
    chosen = order[:int(np.searchsorted(np.cumsum(area[order]), target)) + 1]
    return np.isin(labels, chosen)


# ----------------------------------------------------------------------------------------------- recipes
def channel_mix(x: np.ndarray, rng: np.random.Generator, ref: np.ndarray) -> np.ndarray:
    m = np.diag(np.exp(rng.uniform(-0.25, 0.25, size=3))) + rng.uniform(-0.2, 0.2, size=(3, 3)) * (1 - np.eye(3))
    m /= m.sum(axis=1, keepdims=True).mean()  # about the same brightness
    return x @ m.T


def mkl_transfer(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Pitié and Kokaram's linear Monge–Kantorovich mapping: the pixels ``x`` (N×3) moved by the affine map that
    gives them ``ref``'s mean and covariance with the least mean squared displacement."""
    def sqrtm(c: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh(c)
        return (v * np.sqrt(np.maximum(w, 0.0))) @ v.T

    cs, cr = np.cov(x.T) + 1e-9 * np.eye(3), np.cov(ref.T)
    cs_half = sqrtm(cs)
    cs_inv_half = np.linalg.inv(cs_half)
    t = cs_inv_half @ sqrtm(cs_half @ cr @ cs_half) @ cs_inv_half
    return (x - x.mean(0)) @ t + ref.mean(0)


def mkl(x: np.ndarray, rng: np.random.Generator, ref: np.ndarray) -> np.ndarray:
    return x + rng.uniform(0.5, 0.9) * (mkl_transfer(x, ref) - x)


def curves(x: np.ndarray, rng: np.random.Generator, ref: np.ndarray) -> np.ndarray:
    from scipy.interpolate import PchipInterpolator

    knots = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    out = np.empty_like(x)
    for c in range(3):
        values = np.clip(knots + np.r_[0, rng.uniform(-0.12, 0.12, size=3), 0], 0, 1)
        out[:, c] = PchipInterpolator(knots, np.maximum.accumulate(values))(x[:, c])
    return out


def hsv(x: np.ndarray, rng: np.random.Generator, ref: np.ndarray) -> np.ndarray:
    from skimage.color import hsv2rgb, rgb2hsv

    h = rgb2hsv(x[:, None, :])[:, 0]
    h[:, 0] = (h[:, 0] + rng.choice([-1, 1]) * rng.uniform(10, 40) / 360) % 1.0
    h[:, 1] = np.clip(h[:, 1] * rng.uniform(0.5, 1.6), 0, 1)
    h[:, 2] = np.clip(h[:, 2] * rng.uniform(0.7, 1.3), 0, 1)
    return hsv2rgb(h[:, None, :])[:, 0]


def cdl(x: np.ndarray, rng: np.random.Generator, ref: np.ndarray) -> np.ndarray:
    slope, offset = np.exp(rng.uniform(-0.3, 0.3, size=3)), rng.uniform(-0.08, 0.08, size=3)
    power = np.exp(rng.uniform(-0.3, 0.3, size=3))
    return np.clip(x * slope + offset, 0, 1) ** power


RECIPE_FUNCTIONS: dict[str, Callable[[np.ndarray, np.random.Generator, np.ndarray], np.ndarray]] = {
    'channel_mix': channel_mix, 'mkl': mkl, 'curves': curves, 'hsv': hsv, 'cdl': cdl}


def composite(real: np.ndarray, mask: np.ndarray, recipe: str, rng: np.random.Generator, ref: np.ndarray,
              min_change: float, max_change: float) -> tuple[np.ndarray, float]:
    """``real`` with its foreground edited by ``recipe``, redrawn until the mean change lies in the range."""
    fg = real[mask].astype(np.float64) / 255
    best, best_miss = None, math.inf
    for _ in range(MAX_TRIES):
        pix = np.round(np.clip(RECIPE_FUNCTIONS[recipe](fg, rng, ref), 0, 1) * 255).astype(np.uint8)
        change = float(np.abs(pix.astype(np.int16) - real[mask]).mean())
        miss = max(min_change - change, change - max_change, 0.0)
        if miss < best_miss:
            best, best_miss = (pix, change), miss
        if miss == 0:
            break
    comp = real.copy()
    comp[mask] = best[0]
    return comp, best[1]


# ----------------------------------------------------------------------------------------------- the set
def make_outside(out: Path, photos: dict[str, np.ndarray], per_recipe: int = 8, seed: int = 0,
                 min_change: float = 10.0, max_change: float = 40.0) -> list[dict]:
    """Write ``per_recipe`` composites of every recipe from every photo into ``out``; returns the records."""
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f'{out} is not empty: choose a new --out')
    rng = np.random.default_rng(seed)
    names = sorted(photos)
    records = []
    for recipe in RECIPES:
        for d in ('composite_images', 'masks', 'real_images'):
            (out / recipe / d).mkdir(parents=True, exist_ok=True)
        for name in names:
            others = [n for n in names if n != name] or [name]
            for k in range(per_recipe):
                real = random_view(photos[name], rng)
                mask = region_mask(real, rng)
                donor = photos[others[int(rng.integers(len(others)))]].reshape(-1, 3)
                ref = donor[rng.choice(len(donor), 20000, replace=False)].astype(np.float64) / 255
                comp, change = composite(real, mask, recipe, rng, ref, min_change, max_change)
                stem = f'{name}_{recipe}_{k}'  # stems unique across recipes (test.py names outputs by stem)
                Image.fromarray(real).save(out / recipe / 'real_images' / f'{stem}.jpg', quality=95, subsampling=0)
                Image.fromarray(mask.astype(np.uint8) * 255).save(out / recipe / 'masks' / f'{stem}_1.png')
                Image.fromarray(comp).save(out / recipe / 'composite_images' / f'{stem}_1_1.jpg', quality=95,
                                           subsampling=0)
                records.append({'composite': f'{recipe}/composite_images/{stem}_1_1.jpg', 'photo': name,
                                'recipe': recipe, 'size': f'{real.shape[1]}x{real.shape[0]}',
                                'fg_ratio': round(float(mask.mean()), 4), 'mean_change': round(change, 2)})
    (out / 'IHD_test.txt').write_text(''.join(r['composite'] + '\n' for r in records))
    with open(out / 'composites.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return records


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=HelpFormatter)
    p.add_argument('--out', required=True, help='new folder for the test set')
    p.add_argument('--photos', default='', help='folder of photos (default: the bundled photos named above)')
    p.add_argument('--per_recipe', type=int, default=8, help='composites per recipe and photo')
    p.add_argument('--min_change', type=float, default=10.0, help='least mean foreground change, grey levels')
    p.add_argument('--max_change', type=float, default=40.0, help='largest mean foreground change, grey levels')
    p.add_argument('--seed', type=int, default=0)
    args = p.parse_args(argv)
    setup_logging(False)
    photos = folder_photos(Path(args.photos)) if args.photos else bundled_photos()
    records = make_outside(Path(args.out), photos, args.per_recipe, args.seed, args.min_change, args.max_change)
    print(f'wrote {len(records)} composites ({len(RECIPES)} recipes x {len(photos)} photos x {args.per_recipe}) '
          f'to {args.out}; score a model with: python test.py --dataset_root {args.out} --name <name>')
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
