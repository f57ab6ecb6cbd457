"""Evaluate BargainNet on the iHarmony4 test list, by default exactly as the released test code did.

    python test.py --name <exp> --model bargainnet --dataset_mode iharmony4 --is_train 0 --norm batch \\
      --preprocess resize --gpu_ids 0 --input_nc 20 --netG s2ad --dataset_root <iHarmony4 dir>

Loads ``<checkpoints_dir>/<name>/<epoch>_net_{G,E}.pth``, harmonizes every composite of ``IHD_test.txt`` (or
the first ``--num_test``), scores it and the input composite, and writes to
``<results_dir>/<name>/<epoch>_test/`` (``<epoch>_test_deploy/`` with ``--protocol deploy``): ``images/<stem>.png``
(the scored images), ``metrics.csv`` (one row per image), ``summary.json``, ``index.html`` and ``test_opt.txt``,
then prints the protocol and the table of means. ``--baseline composite`` scores the input composites alone
(folder ``composite_test``); ``--invert_mask`` harmonizes the background instead (suffix ``_invert_mask``).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch.utils.data import Subset
from tqdm import tqdm

import data
import models
from options.test_options import TestOptions
from util import metrics
from util.cli import run_main, setup_logging
from util.html import write_results_page
from util.image import crop_padding, input_to_uint8, output_to_uint8, save_png, to_unit_range

logger = logging.getLogger('test')

CSV_COLUMNS = ('image', 'subset', 'fg_ratio', *metrics.METRIC_KEYS)
COMPOSITE_COLUMNS = tuple(f'comp_{key}' for key in metrics.METRIC_KEYS)  # the input composite's metrics
MAX_PENDING = 2  # batches waiting to be scored


def results_folder(opt: argparse.Namespace) -> str:
    """``<results_dir>/<name>/<epoch>_<phase>`` (``composite_<phase>``: the baseline), ``_deploy``, ``_invert_mask``."""
    tag = 'composite' if opt.baseline == 'composite' else models.factory.checkpoint_tag(opt.epoch, opt.load_iter)
    suffix = ('_deploy' if opt.protocol == 'deploy' else '') + ('_invert_mask' if opt.invert_mask else '')
    return os.path.join(opt.results_dir, opt.name, f'{tag}_{opt.phase}{suffix}')


def describe_protocol(opt: argparse.Namespace) -> str:
    """One line that says what the numbers are."""
    model = opt.baseline == 'none'
    released = opt.protocol == 'released'
    parts = ['released (the released test code)' if released else 'deploy (the networks never see the real image)']
    if model:
        parts.append(f'background code from the {"real image" if released else "composite"}')
    parts.append('output, real and composite made uint8 by truncation like the released tensor2im' if released else
                 'real and composite: the loaded pixels; output still truncated to uint8 like the released tensor2im')
    if not model:
        parts.append('baseline: the input composites scored as outputs, no network')
    elif opt.eval:
        parts.append('BatchNorm running statistics, no dropout (--eval)')
    else:
        parts.append("BatchNorm on each image's own statistics (no --eval), " + (
            'no dropout (--no_dropout)' if opt.no_dropout else f'dropout masks drawn per image from --seed {opt.seed}'))
    if model and opt.invert_mask:
        parts.append('inverted mask fed to G and E (metrics still against the real image on the foreground)')
    size = f'{opt.load_size}x{opt.load_size} (OpenCV INTER_LINEAR)' if opt.preprocess == 'resize' else 'original size'
    peak = '255' if opt.psnr_peak == '255' else 'dynamic (max - min of each output, the released code)'
    return f'protocol: {"; ".join(parts)}; {size}; fMSE on the PIL mode-1 mask; PSNR peak {peak}'


# ----------------------------------------------------------------------------- evaluation
def score_batch(batch: dict[str, Any], harm: Optional[torch.Tensor], protocol: str, psnr_peak: str,
                image_dir: str) -> list[dict[str, Any]]:
    """Metrics of one batch (the harmonized images, or the composites when ``harm`` is None) and of its input
    composites; the scored images saved as ``<stem>.png``."""
    if protocol == 'released':  # truncated like the released tensor2im of the normalized inputs
        comp, real = (output_to_uint8(to_unit_range(batch[key])) for key in ('comp', 'real'))
    else:  # the loaded pixels
        comp, real = input_to_uint8(batch['comp']), input_to_uint8(batch['real'])
    out = comp if harm is None else output_to_uint8(harm)
    mask = batch['mask_metric'][:, 0].numpy() > 0.5
    if 'pad' in batch:  # --preprocess none (batch size 1): score the original pixels only
        comp, real, out, mask = (crop_padding(a, batch['pad'][0]) for a in (comp, real, out, mask))
    values = metrics.image_metrics(out, real, mask, psnr_peak)
    comp_values = metrics.image_metrics(comp, real, mask, psnr_peak) if harm is not None else None
    rows = []
    for i, path in enumerate(batch['comp_path']):
        row = {'image': Path(path).stem, 'subset': batch['subset'][i], 'comp_path': path}
        save_png(out[i], os.path.join(image_dir, row['image'] + '.png'))
        row.update({key: float(values[key][i]) for key in CSV_COLUMNS[2:]})
        if comp_values is not None:
            row.update({f'comp_{key}': float(comp_values[key][i]) for key in metrics.METRIC_KEYS})
        rows.append(row)
    return rows


def evaluate(model: Optional[models.BaseModel], loader: Any, opt: argparse.Namespace,
             image_dir: str) -> list[dict[str, Any]]:
    """Harmonize every batch of ``loader`` (or take the composites when ``model`` is None) and score it.

    Scoring and PNG writing run in a thread while the networks work on the next batch; at most
    ``MAX_PENDING`` batches wait, so memory stays bounded. Returns one row per image, in loader order.
    """
    rows: list[dict[str, Any]] = []
    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix='score') as pool:
        for batch in tqdm(loader, desc='test', unit='batch', disable=None):
            harm = None
            if model is not None:
                model.set_input(batch)
                model.test()
                harm = model.harm
            pending.append(pool.submit(score_batch, batch, harm, opt.protocol, opt.psnr_peak, image_dir))
            while len(pending) > MAX_PENDING:
                rows.extend(pending.popleft().result())
        while pending:
            rows.extend(pending.popleft().result())
    return rows


# ----------------------------------------------------------------------------- outputs
def check_unique_stems(rows: Sequence[dict[str, Any]]) -> None:
    """Raise if two different composites share a file stem (one ``images/<stem>.png`` would hide the other)."""
    seen: dict[str, str] = {}
    for row in rows:
        other = seen.setdefault(row['image'], row['comp_path'])
        if other != row['comp_path']:
            raise ValueError(f'{other} and {row["comp_path"]} share the file stem {row["image"]!r}, so '
                             f'images/{row["image"]}.png holds only one of them: rename one')


def write_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str], path: str) -> None:
    """One line per image; floats at full precision, ``nan`` for empty foregrounds."""
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([repr(row[k]) if isinstance(row[k], float) else row[k] for k in columns])


# ----------------------------------------------------------------------------- entry point
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Evaluate as the options say; returns the exit status (errors are raised, see util.cli.run_main)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    setup_logging('--verbose' in argv)
    options = TestOptions()
    opt = options.parse(argv)
    if opt.preprocess not in ('resize', 'none'):
        raise ValueError(f'--preprocess {opt.preprocess} is a training augmentation: test with resize (the '
                         'protocol, the default) or none (original sizes, --batch_size 1)')
    dataset = data.create_dataset(opt, 'test')
    if math.isfinite(opt.num_test):
        dataset = Subset(dataset, range(min(len(dataset), max(0, int(opt.num_test)))))
    if len(dataset) == 0:
        raise ValueError(f'no test images to evaluate in {opt.dataset_root} (--num_test {opt.num_test})')
    model = None
    if opt.baseline == 'none':
        model = models.create_model(opt)
        model.setup()

    web_dir = results_folder(opt)
    image_dir = os.path.join(web_dir, 'images')
    os.makedirs(image_dir, exist_ok=True)
    logger.info('%s; all options in %s', options.summary(opt), options.save(opt, folder=web_dir))
    protocol = describe_protocol(opt)
    logger.info('%s', protocol)
    start = time.perf_counter()
    rows = evaluate(model, data.create_dataloader(opt, dataset, shuffle=False), opt, image_dir)
    seconds = time.perf_counter() - start
    check_unique_stems(rows)

    groups = metrics.summarize(rows)
    empty = len(rows) - groups['all']['n_fg']
    if empty:
        logger.warning('%d image(s) have an empty foreground after resizing: their fMSE and fPSNR are NaN and '
                       'left out of the fMSE/fPSNR means', empty)
    settings = {'name': opt.name, 'baseline': opt.baseline, 'psnr_peak': opt.psnr_peak, 'preprocess': opt.preprocess,
                'load_size': opt.load_size, 'dataset_root': opt.dataset_root, 'num_images': len(rows),
                'num_empty_foreground': empty, 'batch_size': opt.batch_size, 'seconds': round(seconds, 3),
                'images_per_second': round(len(rows) / seconds, 3)}
    if model is not None:
        settings.update({key: getattr(opt, key) for key in ('epoch', 'load_iter', 'eval', 'no_dropout', 'seed',
                                                            'invert_mask', 'ngf', 'ndf', 'style_dim')})
    summary: dict[str, Any] = {'protocol': {'name': opt.protocol, 'description': protocol}, 'settings': settings,
                               'groups': metrics.json_ready(groups)}
    if model is not None:  # the input composites, scored alongside
        summary['composite_groups'] = metrics.json_ready(metrics.summarize(rows, prefix='comp_'))
    columns = CSV_COLUMNS + (COMPOSITE_COLUMNS if model is not None else ())
    write_csv(rows, columns, os.path.join(web_dir, 'metrics.csv'))
    with open(os.path.join(web_dir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
        f.write('\n')
    title = f'{opt.name}, {os.path.basename(web_dir)}: {len(rows)} images'
    settings_line = 'settings: ' + ', '.join(f'{k} {v}' for k, v in settings.items() if k != 'dataset_root')
    write_results_page(web_dir, title, [protocol, settings_line], summary, rows, dataset, opt.num_html)
    logger.info('%d images in %.1f s (%.2f images/s); results in %s', len(rows), seconds, len(rows) / seconds, web_dir)

    print(protocol)
    print(metrics.format_table(groups))
    if model is not None:
        comp = summary['composite_groups']['all']
        print('input composites, same protocol: ' + ', '.join(
            f'{name} {metrics.format_value(key, comp[key])}' for key, name in metrics.METRIC_TITLES.items()))
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
