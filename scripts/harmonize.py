"""Harmonize your own composites at their full resolution with a trained BargainNet (this project's extension).

    python scripts/harmonize.py --image comp.jpg --mask mask.png --out result.png --name <exp>

The network runs at 256×256; the colour change it makes inside the foreground is carried back to the original
pixels (see models/harmonizer.py), so the result has the input's size and details, and every pixel where the mask
is 0 is unchanged (where it is 255 with --mode background). The model's settings (widths, --no_dropout, --eval)
come from its folder unless given. Folders in, a folder out: --image DIR --mask DIR (paired by file stem) or
--input_dir DIR (x.jpg + x_mask.png, or masks/x.png), with --out DIR receiving <stem>.png. An output never
replaces an input unless --overwrite.

Exit status: 0 when every composite was harmonized; 2 for bad arguments or weights, and when some composites could
not be harmonized (each has its ``error:`` line on stderr, the others are written); 130 when interrupted.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from typing import Optional, Sequence

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from models.factory import resolve_gpu_ids, select_device  # noqa: E402
from models.harmonizer import DEFAULT_GRID, MODES, Harmonizer  # noqa: E402
from util.cli import (EXIT_BAD_INPUT, HelpFormatter, add_pair_arguments, flag_given, positive_int,  # noqa: E402
                      run_main, setup_logging)
from util.pairs import IMG_EXTENSIONS, find_pairs  # noqa: E402

logger = logging.getLogger('harmonize')

JPEG_QUALITY = 95


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0], formatter_class=HelpFormatter,
        allow_abbrev=False,
        epilog='Exit status: 0 all harmonized; 2 bad arguments or weights, or some composites failed (error lines '
               'on stderr, the others written); 130 interrupted.')
    g = parser.add_argument_group('input and output')
    add_pair_arguments(g)
    g.add_argument('--out', type=str, required=True,
                   help='for one composite, the result file (PNG; .jpg/.jpeg: JPEG quality 95; no extension: .png is '
                        'added); for several, or a name ending in / or an existing folder, a folder receiving '
                        '<stem>.png')
    g.add_argument('--overwrite', action='store_true', help='allow an output to replace an input file')
    g = parser.add_argument_group('model (None: from the model folder, as test.py)')
    g.add_argument('--checkpoints_dir', type=str, default='./checkpoints', help='where the experiments are')
    g.add_argument('--name', type=str, default='experiment_name', help='experiment: <checkpoints_dir>/<name>/')
    g.add_argument('--epoch', type=str, default='latest', help='loads <epoch>_net_G.pth and <epoch>_net_E.pth')
    g.add_argument('--ngf', type=positive_int, default=None, help='generator width; None: read from the weights')
    g.add_argument('--ndf', type=positive_int, default=None, help='extractor width; None: read from the weights')
    g.add_argument('--style_dim', type=positive_int, default=None,
                   help='domain code length; None: read from the weights')
    g.add_argument('--no_dropout', action='store_const', const=True, default=None,
                   help='the generator was trained with --no_dropout; None: as its train_opt.txt says')
    g.add_argument('--eval', dest='eval', action='store_const', const=True, default=None,
                   help='BatchNorm running statistics and no dropout; None: as the model folder says (see '
                        'models.factory.model_defaults), else --no_eval')
    g.add_argument('--no_eval', dest='eval', action='store_const', const=False,
                   help="BatchNorm with the image's own statistics and dropout active with masks from --seed (the "
                        'released test)')
    g.add_argument('--seed', type=int, default=0, help='seed of the dropout masks (the same for every image)')
    g.add_argument('--gpu', '--gpu_ids', dest='gpu', type=int, default=0,
                   help='GPU id, -1 for the CPU; without the flag, the CPU when there is no GPU')
    g = parser.add_argument_group('harmonization')
    g.add_argument('--mode', type=str, default='foreground', choices=MODES,
                   help='foreground: adapt the foreground to the background; background: the reverse (inverted mask)')
    g.add_argument('--grid', type=positive_int, default=DEFAULT_GRID,
                   help='cells per side of the grid of colour transforms; 1: one transform for the whole region')
    g.add_argument('--score', action='store_true', help='print the harmony score before and after')
    parser.add_argument('--verbose', action='store_true', help='debug logging and full tracebacks')
    return parser


def output_paths(pairs: list[tuple[str, str]], out: str) -> tuple[list[str], bool]:
    """Where each result goes, and whether into the folder ``out``: a file for one composite, else
    ``out/<stem>.png`` (see ``--out``)."""
    if len(pairs) == 1 and not out.endswith(('/', os.sep)) and not os.path.isdir(out):
        if os.path.splitext(out)[1].lower() not in IMG_EXTENSIONS:
            logger.info('--out %s has no image extension: writing %s.png', out, out)
            out += '.png'
        return [out], False
    if os.path.isfile(out):
        raise ValueError(f'--out {out} is a file: give a folder for the {len(pairs)} composites')
    if os.path.splitext(out)[1].lower() in IMG_EXTENSIONS and not os.path.isdir(out):
        raise ValueError(f'--out {out} names an image file, but there are {len(pairs)} composites: give a folder')
    return [os.path.join(out, os.path.splitext(os.path.basename(image))[0] + '.png') for image, _ in pairs], True


def refuse_overwriting(pairs: list[tuple[str, str]], outs: list[str], folder: Optional[str]) -> None:
    """ValueError when an output would replace an input file, or results would go into ``folder`` holding inputs."""
    inputs = {os.path.realpath(path) for pair in pairs for path in pair}
    if folder is not None and os.path.realpath(folder) in {os.path.dirname(path) for path in inputs}:
        raise ValueError(f'--out {folder} is a folder of the inputs: the results would replace or mix with them; '
                         'give another folder, or --overwrite')
    for path in outs:
        if os.path.realpath(path) in inputs:
            raise ValueError(f'--out {path} is one of the inputs and would be overwritten: give another --out, or '
                             '--overwrite')


def save_image(array: np.ndarray, path: str) -> None:
    """Write ``array`` atomically (a temporary file, then renamed); JPEG at quality 95 with full-resolution
    chroma, other formats by the extension."""
    ext = os.path.splitext(path)[1].lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None:
        raise ValueError(f'{path}: this Pillow cannot write {ext} files; give a .png or .jpg name')
    options = {'quality': JPEG_QUALITY, 'subsampling': 0} if fmt == 'JPEG' else {}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            Image.fromarray(array).save(f, format=fmt, **options)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    pairs = find_pairs(args.image, args.mask, args.input_dir)
    outs, into_folder = output_paths(pairs, args.out)
    if not args.overwrite:
        refuse_overwriting(pairs, outs, args.out if into_folder else None)
    device = select_device(resolve_gpu_ids([args.gpu], requested=flag_given(argv, '--gpu', '--gpu_ids')))
    harmonizer = Harmonizer.from_checkpoints(args.checkpoints_dir, args.name, args.epoch, device, args.ngf, args.ndf,
                                             args.style_dim, args.no_dropout, args.eval, args.seed)
    failed = 0
    written: set[str] = set()
    for (image, mask), out in zip(pairs, outs):
        try:
            if out in written:
                raise ValueError(f'{out} was already written for another composite of the same name')
            result = harmonizer.harmonize(image, mask, args.mode, args.grid)
            save_image(result, out)
            written.add(out)
            logger.info('wrote %s', out)
            if args.score:
                before, after = (harmonizer.scorer.score(x, mask) for x in (image, result))
                print(f'The harmony score of {os.path.basename(image)} is {before.score:.3f} before and '
                      f'{after.score:.3f} after harmonization', flush=True)
        except (ValueError, OSError) as exc:  # this composite fails, the others go on
            print(f'error: {image}: {exc}', file=sys.stderr)
            failed += 1
    if failed:
        logger.error('%d of %d composite%s could not be harmonized', failed, len(pairs), 's' * (len(pairs) > 1))
        return EXIT_BAD_INPUT
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
