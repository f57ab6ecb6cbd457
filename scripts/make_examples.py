"""Make the example composites of examples/ from scikit-image's sample photographs.

    python scripts/make_examples.py [--out examples]

Each example is a photograph whose foreground object (a hand-placed polygon or ellipse) had its colours changed:
white balance, exposure and tone curve, as if pasted from another photograph. Writes ``composite/<name>.jpg``
(JPEG quality 95), ``mask/<name>.png`` (0 / 255, white = foreground) and ``README.md``. Deterministic: the same
scikit-image photographs give the same files.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import skimage.data
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from util.cli import HelpFormatter, run_main, setup_logging  # noqa: E402

logger = logging.getLogger('make_examples')

Shape = tuple[str, list]  # ('ellipse', [x0, y0, x1, y1]) or ('polygon', [(x, y), ...])


@dataclass(frozen=True)
class Example:
    name: str
    photo: Callable[[], np.ndarray]
    crop: Optional[tuple[int, int, int, int]]  # left, top, right, bottom
    shapes: tuple[Shape, ...]  # union of shapes = the foreground, in cropped coordinates
    gains: tuple[float, float, float]  # per-channel factors (white balance and exposure)
    gamma: float  # tone curve (pixel/255) ** gamma
    source: str


EXAMPLES = (
    Example('chelsea_face', skimage.data.chelsea, None,
            (('ellipse', [110, 30, 365, 280]),),
            (0.80, 0.97, 1.25), 1.0,
            '`skimage.data.chelsea()`: Chelsea the cat, CC0 by the photographer (Stefan van der Walt)'),
    Example('coffee_cup', skimage.data.coffee, None,
            (('ellipse', [172, 18, 410, 206]),
             ('polygon', [(176, 112), (408, 112), (394, 210), (362, 256), (302, 286), (246, 282), (206, 252),
                          (186, 200)]),
             ('ellipse', [194, 228, 262, 308])),
            (0.62, 0.66, 0.78), 1.1,
            '`skimage.data.coffee()`: a cup of espresso, CC0 by the photographer (Rachel Michetti), courtesy of '
            'Pikolo Espresso Bar'),
    Example('astronaut_head', skimage.data.astronaut, (0, 0, 512, 448),
            (('ellipse', [150, 10, 304, 192]),),
            (1.22, 1.04, 0.78), 0.8,
            '`skimage.data.astronaut()`, cropped to 512x448: Eileen Collins, NASA, public domain'),
    Example('rocket', skimage.data.rocket, None,
            (('polygon', [(321, 125), (330, 132), (335, 150), (337, 402), (305, 402), (307, 150), (312, 132)]),),
            (1.35, 1.12, 0.78), 0.85,
            '`skimage.data.rocket()`: DSCOVR on Falcon 9, SpaceX, public domain'),
)


def make_example(example: Example) -> tuple[np.ndarray, np.ndarray]:
    """The composite (uint8 H×W×3) and mask (uint8 H×W, 0 / 255) of ``example``."""
    photo = Image.fromarray(example.photo())
    if example.crop is not None:
        photo = photo.crop(example.crop)
    mask = Image.new('L', photo.size, 0)
    draw = ImageDraw.Draw(mask)
    for kind, coords in example.shapes:
        getattr(draw, kind)(coords, fill=255)
    real = np.asarray(photo, dtype=np.float64) / 255
    recoloured = np.clip(np.asarray(example.gains) * real ** example.gamma, 0, 1)
    fg = np.asarray(mask)[..., None] > 0
    comp = np.rint(255 * np.where(fg, recoloured, real)).astype(np.uint8)
    return comp, np.asarray(mask)


README = """# Example composites

Composite + mask pairs to try `predict_harmony_score.py` and `scripts/harmonize.py` on, laid out as in the
original repository: `composite/<name>.jpg` and `mask/<name>.png` (white = foreground). With the demo model,
from the repository root:

```bash
python predict_harmony_score.py --image examples/composite --mask examples/mask \\
  --weight checkpoints/demo/latest_net_E.pth
python scripts/harmonize.py --image examples/composite --mask examples/mask --checkpoints_dir checkpoints \\
  --name demo --out results/examples --score
```

The figure `docs/images/teaser.png` (`python scripts/make_teaser.py`) shows three of them with the second
command's results; both tools are described in [docs/harmonization.md](../docs/harmonization.md).

They are made by `python scripts/make_examples.py` from scikit-image's sample photographs (`skimage.data`): in
each photograph the foreground object, outlined by hand with ellipses and polygons, had its white balance,
exposure and tone curve changed, as if it had been pasted from another photograph. None is 256x256.

| name | size | foreground | change | photograph |
|---|---|---|---|---|
{rows}
"""


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=HelpFormatter)
    parser.add_argument('--out', type=str, default='examples', help='output folder')
    parser.add_argument('--verbose', action='store_true', help='debug logging and full tracebacks')
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    for sub in ('composite', 'mask'):
        os.makedirs(os.path.join(args.out, sub), exist_ok=True)
    rows = []
    for ex in EXAMPLES:
        comp, mask = make_example(ex)
        Image.fromarray(comp).save(os.path.join(args.out, 'composite', ex.name + '.jpg'), quality=95)
        Image.fromarray(mask).save(os.path.join(args.out, 'mask', ex.name + '.png'))
        h, w = mask.shape
        change = f'RGB gains {ex.gains}, gamma {ex.gamma}'
        rows.append(f'| {ex.name} | {w}x{h} | {100 * (mask > 0).mean():.0f}% | {change} | {ex.source} |')
        logger.info('wrote %s (%dx%d)', ex.name, w, h)
    with open(os.path.join(args.out, 'README.md'), 'w') as f:
        f.write(README.format(rows='\n'.join(rows)))
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
