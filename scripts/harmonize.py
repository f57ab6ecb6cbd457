"""Harmonize your own composites at their full resolution with a trained BargainNet.

    python scripts/harmonize.py --image comp.jpg --mask mask.png --out result.png --name <exp>

The network runs at 256×256; the change it makes inside the foreground is carried back to the original pixels
(see models.inference.Harmonizer.harmonize), so the result has the input's size and details, and every pixel where
the mask is 0 is unchanged (where it is 255 with --mode background). Folders in, a folder out: --image DIR --mask DIR
(paired by file stem) or --input_dir DIR (x.jpg + x_mask.png, or masks/x.png), with --out DIR; results are PNG.

Exit status: 0 when every composite was harmonized, 1 when some could not be (each has its ``error:`` line on
stderr, the others are written), 2 for unusable arguments or weights.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models.inference import (DEFAULT_GRID, IMG_EXTENSIONS, METHODS, MODES, Harmonizer, find_pairs,  # noqa: E402
                              resolve_device)
from util.cli import (EXIT_SOME_FAILED, add_pair_arguments, positive_int, run_main,  # noqa: E402
                      setup_logging)

logger = logging.getLogger('harmonize')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog='Exit status: 0 all harmonized, 1 some composites failed (error lines on stderr), 2 bad arguments '
               'or weights.')
    g = parser.add_argument_group('input and output')
    add_pair_arguments(g)
    g.add_argument('--out', type=str, required=True,
                   help='the result file for a single composite (.png keeps the unchanged pixels bit-identical), '
                        'otherwise a folder that receives <stem>.png')
    g = parser.add_argument_group('model')
    g.add_argument('--checkpoints_dir', type=str, default='./checkpoints', help='where the experiments are')
    g.add_argument('--name', type=str, default='experiment_name', help='experiment: <checkpoints_dir>/<name>/')
    g.add_argument('--epoch', type=str, default='latest', help='loads <epoch>_net_G.pth and <epoch>_net_E.pth')
    g.add_argument('--ngf', type=positive_int, default=None, help='generator width; unset: read from the weights')
    g.add_argument('--ndf', type=positive_int, default=None,
                   help='extractor width (64 in the released model); unset: read from the weights')
    g.add_argument('--style_dim', type=positive_int, default=None,
                   help='domain code length; unset: read from the weights')
    g.add_argument('--no_dropout', action='store_true', help='the generator was trained with --no_dropout')
    g.add_argument('--eval', action='store_true',
                   help='BatchNorm running statistics and no dropout; default: the released test behaviour, '
                        'each image normalized with its own statistics and dropout active with masks from --seed')
    g.add_argument('--seed', type=int, default=0, help='seed of the dropout masks (the same for every image)')
    g.add_argument('--gpu', '--gpu_ids', dest='gpu', type=int, default=0, help='GPU id; -1 (or no CUDA) for the CPU')
    g = parser.add_argument_group('harmonization')
    g.add_argument('--mode', type=str, default='foreground', choices=MODES,
                   help='foreground: adapt the foreground to the background; background: the reverse (inverted mask)')
    g.add_argument('--method', type=str, default='affine', choices=METHODS,
                   help='how the change made at 256x256 reaches full resolution: affine = colour transforms fitted '
                        'at 256x256 on a --grid of cells and applied to every original pixel; delta = the '
                        'per-pixel difference, upsampled and added')
    g.add_argument('--grid', type=positive_int, default=DEFAULT_GRID,
                   help='cells per side of the grid of colour transforms (--method affine); 1: one transform')
    g.add_argument('--score', action='store_true', help='print the harmony score before and after')
    parser.add_argument('--verbose', action='store_true', help='debug logging and full tracebacks')
    return parser


def output_paths(pairs: list[tuple[str, str]], out: str) -> list[str]:
    """Where each result goes: ``out`` itself for one composite and a file name, else ``out/<stem>.png``."""
    if len(pairs) == 1 and not os.path.isdir(out) and out.lower().endswith(IMG_EXTENSIONS):
        return [out]
    if os.path.isfile(out):
        raise ValueError(f'--out {out} is a file: give a folder for {len(pairs)} composites')
    return [os.path.join(out, os.path.splitext(os.path.basename(image))[0] + '.png') for image, _ in pairs]


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    pairs = find_pairs(args.image, args.mask, args.input_dir)
    outs = output_paths(pairs, args.out)
    harmonizer = Harmonizer.from_checkpoints(args.checkpoints_dir, args.name, args.epoch, resolve_device(args.gpu),
                                             args.ngf, args.ndf, args.style_dim, not args.no_dropout,
                                             per_image=not args.eval, seed=args.seed)
    failed = 0
    written: set[str] = set()
    for (image, mask), out in zip(pairs, outs):
        try:
            if out in written:
                raise ValueError(f'{out} was already written for another composite of the same name')
            result = harmonizer.harmonize(image, mask, args.mode, args.method, args.grid)
            os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
            Image.fromarray(result).save(out)
            written.add(out)
            logger.info('wrote %s', out)
            if args.score:
                before, after = (harmonizer.scorer.score(x, mask) for x in (image, result))
                print(f'The harmony score of {os.path.basename(image)} is {before.score:.2f} before and '
                      f'{after.score:.2f} after harmonization', flush=True)
        except (ValueError, OSError) as exc:  # this composite fails, the others go on
            print(f'error: {image}: {exc}', file=sys.stderr)
            failed += 1
    if failed:
        logger.error('%d of %d composites could not be harmonized', failed, len(pairs))
        return EXIT_SOME_FAILED
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
