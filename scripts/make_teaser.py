"""The README's figure, ``docs/images/teaser.png``: three composites of ``examples/``, their masks and the demo
model's full-resolution harmonization (``models.Harmonizer``, as ``scripts/harmonize.py`` runs it).

    python scripts/make_teaser.py                      # rewrites docs/images/teaser.png
    python scripts/make_teaser.py --out /tmp/teaser.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from models.harmonizer import Harmonizer  # noqa: E402
from util.cli import HelpFormatter, run_main, setup_logging  # noqa: E402

NAMES = ('chelsea_face', 'coffee_cup', 'rocket')


def teaser(out: Path, checkpoints_dir: str, name: str, examples: Path, names: Sequence[str] = NAMES) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    harmonizer = Harmonizer.from_checkpoints(checkpoints_dir, name)
    rows = []
    for stem in names:
        comp, mask = examples / 'composite' / f'{stem}.jpg', examples / 'mask' / f'{stem}.png'
        with Image.open(comp) as c, Image.open(mask) as m:
            rows.append((np.asarray(c.convert('RGB')), np.asarray(m.convert('L')),
                         harmonizer.harmonize(str(comp), str(mask))))
    fig, axes = plt.subplots(len(rows), 3, figsize=(7.4, 1.75 * len(rows) + 0.3), squeeze=False)
    for r, images in enumerate(rows):
        for c, img in enumerate(images):
            ax = axes[r][c]
            ax.imshow(img, cmap='gray' if img.ndim == 2 else None, vmin=0, vmax=255, interpolation='lanczos')
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_frame_on(False)
            if r == 0:
                ax.set_title(('composite', 'mask', f'harmonized ({name} model)')[c], fontsize=11)
    fig.tight_layout(pad=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=HelpFormatter)
    p.add_argument('--out', default=str(ROOT / 'docs' / 'images' / 'teaser.png'), help='the PNG to write')
    p.add_argument('--checkpoints_dir', default=str(ROOT / 'checkpoints'), help='folder of model folders')
    p.add_argument('--name', default='demo', help='the model folder')
    p.add_argument('--examples', default=str(ROOT / 'examples'), help='folder with composite/ and mask/')
    args = p.parse_args(argv)
    setup_logging(False)
    teaser(Path(args.out), args.checkpoints_dir, args.name, Path(args.examples))
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
