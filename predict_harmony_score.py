"""How harmonious is a composite? The distance between the domain codes of its foreground and background.

    python predict_harmony_score.py --image <composite> --mask <mask>

prints ``The harmony score of <file name> is <score>``: exp(-0.04212·d) in (0, 1] with 3 decimals, larger = more
harmonious, d the Euclidean distance of the two 16-d codes of the extractor E (the released script's score and
preprocessing, see models/harmony_score.py). Many composites in one call: repeat ``--image/--mask``, give two
folders (paired by file stem), or ``--input_dir``.

Exit status: 0 when every composite was scored; 2 for bad arguments or weights, and when some composites could not
be scored (each has its ``error:`` line on stderr, the others are scored); 130 when interrupted.
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from typing import Optional, Sequence

from models.factory import resolve_gpu_ids, select_device
from models.harmony_score import DEFAULT_E_WEIGHT, HarmonyScorer, ScoreInput, default_weight, prepare_score_input
from util.cli import (EXIT_BAD_INPUT, HelpFormatter, add_pair_arguments, flag_given, positive_int, run_main,
                      setup_logging)
from util.pairs import find_pairs

logger = logging.getLogger('predict_harmony_score')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0], formatter_class=HelpFormatter,
        allow_abbrev=False,
        epilog='Exit status: 0 all scored; 2 bad arguments or weights, or some composites failed (error lines on '
               'stderr, the others scored); 130 interrupted.')
    add_pair_arguments(parser)
    parser.add_argument('--weight', type=str, default=DEFAULT_E_WEIGHT,
                        help='domain code extractor weights (the released latest_net_E.pth); when the default file '
                             'is missing, the shipped demo extractor checkpoints/demo/latest_net_E.pth, with a notice')
    parser.add_argument('--ndf', type=positive_int, default=None,
                        help='extractor width (64 in the released model); None: read from the weights')
    parser.add_argument('--style_dim', type=positive_int, default=None,
                        help='domain code length (16 in the released model); None: read from the weights')
    parser.add_argument('--gpu', '--gpu_ids', dest='gpu', type=int, default=0,
                        help='GPU id, -1 for the CPU; without the flag, the CPU when there is no GPU')
    parser.add_argument('--batch_size', type=positive_int, default=16, help='composites per extractor pass')
    parser.add_argument('--format', type=str, default='text', choices=('text', 'csv', 'json'),
                        help='text: the released line, 3 decimals; csv/json: the unrounded score and the distance')
    parser.add_argument('--verbose', action='store_true', help='debug logging and full tracebacks')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    pairs = find_pairs(args.image, args.mask, args.input_dir)
    weight = args.weight if flag_given(argv, '--weight') else default_weight()
    device = select_device(resolve_gpu_ids([args.gpu], requested=flag_given(argv, '--gpu', '--gpu_ids')))
    scorer = HarmonyScorer.from_weights(weight, device, args.ndf, args.style_dim)  # logs what it loaded

    rows = []
    writer = None
    if args.format == 'csv':
        writer = csv.DictWriter(sys.stdout, ['image', 'mask', 'score', 'distance', 'error'], lineterminator='\n')
        writer.writeheader()
    for start in range(0, len(pairs), args.batch_size):
        batch = pairs[start:start + args.batch_size]
        prepared: dict[int, ScoreInput] = {}
        problems: dict[int, str] = {}
        for i, (image, mask) in enumerate(batch):
            try:
                prepared[i] = prepare_score_input(image, mask)
            except (ValueError, OSError) as exc:  # this composite fails, the others go on
                problems[i] = str(exc)
        scores = dict(zip(prepared, scorer.score_inputs(list(prepared.values())))) if prepared else {}
        for i, (image, mask) in enumerate(batch):
            if i in problems:
                print(f'error: {image}: {problems[i]}', file=sys.stderr)
                row = {'image': image, 'mask': mask, 'error': problems[i]}
            else:
                result = scores[i]
                if args.format == 'text':
                    print(result.line(os.path.basename(image)), flush=True)
                row = {'image': image, 'mask': mask, 'score': result.score, 'distance': result.distance}
            if writer is not None:
                writer.writerow(row)
            rows.append(row)
    if args.format == 'json':
        print(json.dumps(rows, indent=2))
    failed = sum('error' in row for row in rows)
    if failed:
        logger.error('%d of %d composite%s could not be scored', failed, len(rows), 's' * (len(rows) > 1))
        return EXIT_BAD_INPUT
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
