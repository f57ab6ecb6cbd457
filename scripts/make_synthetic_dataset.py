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

This script plans the dataset and writes its files; the pixels come from two modules beside it:
``synthetic_photos.py`` (the photos and the real images cut from them) and ``synthetic_edits.py`` (masks,
colour recipes, composites).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / 'scripts'):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from synthetic_edits import SUBSETS, generate_mask, make_composite, recolour_view, reference_pixels  # noqa: E402
from synthetic_photos import (SKIMAGE_GRAY_PHOTOS, Photo, apply_view, apply_view_mask, attach_user_masks,  # noqa: E402
                              load_photos, plan_view, skimage_gray_photos, skimage_photos)
from util.cli import HelpFormatter, run_main, setup_logging  # noqa: E402

logger = logging.getLogger('make_synthetic_dataset')

# iHarmony4's training composites per sub-dataset, the default mix of sub-datasets
IHARMONY4_TRAIN = {'HCOCO': 38545, 'HAdobe5k': 19437, 'HFlickr': 7449, 'Hday2night': 311}
IHARMONY4_FG_RANGE = (0.01, 0.9)


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
                                formatter_class=HelpFormatter)
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
