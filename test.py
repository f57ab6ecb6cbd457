"""Evaluate BargainNet on the iHarmony4 test list with the protocol behind the paper's numbers (SPEC §4).

    python test.py --name <exp> --model bargainnet --dataset_mode iharmony4 --is_train 0 --norm batch \\
      --preprocess resize --gpu_ids 0 --input_nc 20 --netG s2ad --dataset_root <iHarmony4 dir>

Loads ``<checkpoints_dir>/<name>/<epoch>_net_{G,E}.pth``, harmonizes every composite of ``IHD_test.txt`` (or
the first ``--num_test``) and writes to ``<results_dir>/<name>/<epoch>_test/``: ``images/<stem>.png`` (the
harmonized 256×256 images), ``metrics.csv`` (one row per image), ``summary.json`` and ``index.html``. The
table of means (overall, per sub-dataset, per foreground ratio) is printed. ``--baseline composite``
evaluates the input composites instead (folder ``composite_test``); ``--invert_mask`` harmonizes the
background to the foreground (folder suffix ``_invert_mask``).
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
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, default_collate
from tqdm import tqdm

import data
import models
from models.base_model import BaseModel
from models.checkpoint import infer_architecture, load_state_dict_file
from options.test_options import TestOptions
from util import metrics
from util.cli import run_main, setup_logging
from util.html import HTML
from util.image import input_to_uint8, mask_to_uint8, output_to_uint8, save_png

logger = logging.getLogger('test')

CSV_COLUMNS = ('image', 'subset', 'fg_ratio', 'mse', 'psnr', 'fmse', 'fpsnr', 'ssim')
ARCH_OPTIONS = ('ngf', 'ndf', 'style_dim')
MAX_PENDING = 2  # batches waiting to be scored


# ----------------------------------------------------------------------------- options and weights
def given_options(options: TestOptions, argv: Sequence[str], names: Sequence[str]) -> set[str]:
    """The option names among ``names`` that ``argv`` sets (in any form argparse accepts: ``--ngf=8``, ...)."""
    parser = options.parser
    unset = object()
    saved = {name: parser.get_default(name) for name in names}
    parser.set_defaults(**{name: unset for name in names})
    try:
        parsed, _ = parser.parse_known_args(list(argv))
    finally:
        parser.set_defaults(**saved)
    return {name for name in names if getattr(parsed, name) is not unset}


def checkpoint_paths(opt: argparse.Namespace) -> dict[str, str]:
    """``<checkpoints_dir>/<name>/<tag>_net_{G,E}.pth`` of ``--epoch`` / ``--load_iter``; error if missing."""
    tag = f'iter_{opt.load_iter}' if opt.load_iter > 0 else str(opt.epoch)
    paths = {net: os.path.join(opt.checkpoints_dir, opt.name, f'{tag}_net_{net}.pth') for net in ('G', 'E')}
    missing = [p for p in paths.values() if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(
            f'weights not found: {", ".join(missing)} (from --name {opt.name} --checkpoints_dir '
            f'{opt.checkpoints_dir} --epoch {opt.epoch}{f" --load_iter {opt.load_iter}" if opt.load_iter else ""}); '
            f'put {tag}_net_G.pth and {tag}_net_E.pth there or fix those options')
    return paths


def resolve_architecture(options: TestOptions, opt: argparse.Namespace, argv: Sequence[str]) -> None:
    """Set ``ngf``, ``ndf`` and ``style_dim`` from the checkpoint's tensor shapes unless given on the command line.

    A value given on the command line is kept; if it does not match the file, the strict loader says so.
    """
    paths = checkpoint_paths(opt)
    given = given_options(options, argv, ARCH_OPTIONS + ('input_nc',))
    todo = [name for name in ARCH_OPTIONS if name not in given]
    if not todo:
        return
    arch = infer_architecture(load_state_dict_file(paths['G']), load_state_dict_file(paths['E']))
    found = {name: arch[name] for name in todo if name in arch}
    if not found:
        return
    for name, value in found.items():
        setattr(opt, name, value)
    if 'input_nc' not in given:
        opt.input_nc = 4 + opt.style_dim
    elif opt.input_nc != 4 + opt.style_dim:
        raise ValueError(f'--input_nc {opt.input_nc} does not match --style_dim {opt.style_dim} of '
                         f'{paths["E"]}: the generator takes 3 + 1 + style_dim = {4 + opt.style_dim} channels')
    logger.info('architecture read from the checkpoint (not given on the command line): %s',
                ', '.join(f'{k} {v}' for k, v in found.items()))


def results_folder(opt: argparse.Namespace) -> str:
    """``<results_dir>/<name>/<epoch>_<phase>`` (``composite_<phase>`` for the baseline, ``_invert_mask`` added)."""
    tag = 'composite' if opt.baseline == 'composite' else (
        f'iter_{opt.load_iter}' if opt.load_iter > 0 else str(opt.epoch))
    folder = f'{tag}_{opt.phase}' + ('_invert_mask' if opt.invert_mask else '')
    return os.path.join(opt.results_dir, opt.name, folder)


def describe_protocol(opt: argparse.Namespace) -> str:
    """One line that says what the numbers are."""
    parts = ['PSNR peak 255' if opt.psnr_peak == '255' else
             'PSNR peak dynamic (max - min of each output, the released code)']
    if opt.baseline == 'composite':
        parts.append('baseline: the input composites evaluated as outputs, no network')
    else:
        if opt.eval:
            parts.append('BatchNorm running statistics and no dropout (--eval)')
        else:
            parts.append('BatchNorm per-image statistics (released protocol, no --eval)')
            parts.append('no dropout (--no_dropout)' if opt.no_dropout else
                         f'dropout active with per-image masks from --seed {opt.seed}')
        if opt.invert_mask:
            parts.append('inverted mask fed to G and E (background harmonization; metrics still against real '
                         'with the foreground mask)')
    size = f'{opt.load_size}x{opt.load_size}' if opt.preprocess == 'resize' else 'original-size'
    parts.append(f'metrics on {size} uint8 images, outputs truncated like the released tensor2im; fMSE with the '
                 'nearest-resized mask')
    return 'protocol: ' + '; '.join(parts)


# ----------------------------------------------------------------------------- evaluation
def harmonize_each(model: BaseModel, batch: dict[str, Any]) -> torch.Tensor:
    """The model's output for every image of ``batch``, computed one image at a time (unless ``--batched_forward``).

    Used where the main process runs the networks (GPUs, ``--compile``; on the CPU :class:`HarmonizingDataset`
    does it in the loader workers). Convolution libraries (oneDNN, cuDNN) pick kernels by batch shape, and their
    sums round differently by about 1e-7; after the uint8 truncation that flips a few pixels. One image per
    forward makes every result bit-identical for any ``--batch_size``. BatchNorm and dropout are per image
    anyway in the released protocol.
    """
    if getattr(model.opt, 'batched_forward', False):  # faster on GPUs; not bit-identical across batch sizes
        model.set_input(batch)
        model.test()
        return model.harm
    outputs = []
    for i in range(len(batch['comp'])):
        model.set_input({key: value[i:i + 1] for key, value in batch.items()})
        model.test()
        outputs.append(model.harm)
    return torch.cat(outputs)


class HarmonizingDataset(Dataset):
    """The test items with the model's output added as ``harm``, computed where the item is loaded.

    On the CPU, test.py runs the networks inside the loader workers (``--num_threads`` of them), each image
    with one torch thread: the workers harmonize that many images at once instead of one image at a time
    spread thinly over the cores (a 256×256 forward at batch 1 keeps few cores busy), and loading, networks and
    scoring overlap. One thread per image also makes every result the same for any ``--num_threads`` and
    ``--batch_size`` (convolution sums round differently with other thread counts). With ``--num_threads 0``
    the main process does the same, one thread per image.
    """

    def __init__(self, dataset: Dataset, model: BaseModel) -> None:
        self.dataset = dataset
        self.model = model

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        self.model.set_input(default_collate([item]))
        self.model.test()
        item['harm'] = self.model.harm[0].clone()  # inference tensors cannot be sent between processes
        return item


def networks_in_workers(model: Optional[BaseModel], opt: argparse.Namespace) -> bool:
    """Whether test.py harmonizes in the loader workers (the CPU, one image per forward)."""
    return (model is not None and model.device.type == 'cpu' and not getattr(opt, 'batched_forward', False)
            and not opt.compile)


def warm_up(model: BaseModel, opt: argparse.Namespace) -> None:
    """One forward at the test size, one thread, before the workers fork: they inherit its one-time work
    (prepacked weights, see models/prepack.py) instead of each repeating it."""
    if opt.preprocess != 'resize':
        return
    size = opt.load_size
    comp = torch.zeros(1, 3, size, size)
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4:3 * size // 4, size // 4:3 * size // 4] = 1
    model.harmonize(comp, mask, [0])


def _crop(image: np.ndarray, pad: torch.Tensor) -> np.ndarray:
    """Undo the reflect padding of ``--preprocess none`` on a (1,H,W[,C]) array; pad = [left, top, right, bottom]."""
    left, top, right, bottom = (int(p) for p in pad)
    return image[:, top:image.shape[1] - bottom, left:image.shape[2] - right]


def score_batch(out: np.ndarray, comp: np.ndarray, real: np.ndarray, mask: np.ndarray, paths: Sequence[str],
                subsets: Sequence[str], psnr_peak: str, image_dir: str) -> list[dict[str, Any]]:
    """Metrics of one batch of uint8 images (B,H,W,3), and its harmonized images saved as ``<stem>.png``."""
    values = metrics.image_metrics(out, real, mask, psnr_peak)
    comp_mse = metrics.mse(comp, real)
    rows = []
    for i, (path, subset) in enumerate(zip(paths, subsets)):
        stem = Path(path).stem
        save_png(out[i], os.path.join(image_dir, stem + '.png'))
        row = {'image': stem, 'subset': subset}
        row.update({key: float(values[key][i]) for key in CSV_COLUMNS[2:]})
        row.update(comp_mse=float(comp_mse[i]), comp_path=path)
        rows.append(row)
    return rows


@torch.inference_mode()
def evaluate(model: Optional[BaseModel], loader: DataLoader, opt: argparse.Namespace,
             image_dir: str) -> list[dict[str, Any]]:
    """Harmonize every image of ``loader``, save it to ``image_dir`` and return one row of metrics per image.

    Scoring (SSIM is the slow part) and PNG writing run in a background thread while the networks work on
    the next batch; at most ``MAX_PENDING`` batches wait, so memory stays bounded.

    Args:
        model: a set-up model, or None to evaluate the input composites (``--baseline composite``).
        loader: the test loader, not shuffled.
        opt: the test options (``psnr_peak``).
        image_dir: where ``<composite stem>.png`` is written.

    Returns:
        Rows in loader order with the CSV columns plus ``comp_mse`` (the composite's MSE, for the gains),
        ``comp_path`` and ``position`` (the image's position in the dataset).
    """
    rows: list[dict[str, Any]] = []
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix='score') as pool:
        for batch in tqdm(loader, desc='test', unit='batch', disable=None):
            comp = input_to_uint8(batch['comp'])
            real = input_to_uint8(batch['real'])
            if model is None:
                out = comp
            else:
                out = output_to_uint8(batch['harm'] if 'harm' in batch else harmonize_each(model, batch))
            mask = batch['mask_metric'][:, 0].numpy() > 0.5
            if 'pad' in batch:  # --preprocess none (batch size 1): score the original pixels only
                comp, real, out, mask = (_crop(a, batch['pad'][0]) for a in (comp, real, out, mask))
            pending.append(pool.submit(score_batch, out, comp, real, mask, list(batch['comp_path']),
                                       list(batch['subset']), opt.psnr_peak, image_dir))
            while len(pending) > MAX_PENDING:
                rows.extend(pending.popleft().result())
        while pending:
            rows.extend(pending.popleft().result())
    for position, row in enumerate(rows):
        row['position'] = position
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


def write_csv(rows: Sequence[dict[str, Any]], path: str) -> None:
    """One line per image with :data:`CSV_COLUMNS`; floats at full precision, ``nan`` for empty foregrounds."""
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow([repr(row[k]) if isinstance(row[k], float) else row[k] for k in CSV_COLUMNS])


def _finite_or_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_summary(groups: dict[str, dict[str, float]], settings: dict[str, Any], path: str) -> None:
    """The settings and the group means as JSON (undefined means as null)."""
    doc = {'settings': settings,
           'groups': {name: {k: _finite_or_none(v) for k, v in g.items()} for name, g in groups.items()}}
    with open(path, 'w') as f:
        json.dump(doc, f, indent=2)
        f.write('\n')


def write_html(web_dir: str, rows: Sequence[dict[str, Any]], dataset: Dataset, num: int, title: str,
               baseline: bool = False) -> str:
    """``index.html``: composite, harmonized, real and mask of the ``num`` largest and ``num`` smallest gains.

    Gain = MSE of the composite − MSE of the output; for the composite baseline (no gains) the composites
    with the largest and smallest MSE are shown instead. Thumbnails go to ``page/``, ``images/`` keeps only
    the harmonized images.
    """
    html = HTML(web_dir, title)
    html.add_text(title)
    if baseline:
        score, what = (lambda r: r['mse']), 'MSE'
    else:
        score, what = (lambda r: r['comp_mse'] - r['mse']), 'gains (composite MSE - output MSE)'
    order = sorted(range(len(rows)), key=lambda i: score(rows[i]), reverse=True)
    largest = order[:num]
    shown = set(largest)
    smallest = [i for i in reversed(order) if i not in shown][:num]
    sections = ((f'{len(largest)} largest {what}', largest), (f'{len(smallest)} smallest {what}', smallest))
    for header, picks in sections:
        html.add_header(header)
        for i in picks:
            row = rows[i]
            item = dataset[row['position']]
            stem = row['image']
            thumbs = {'composite': input_to_uint8(item['comp']), 'real': input_to_uint8(item['real']),
                      'mask': mask_to_uint8(item['mask_metric'])}
            links = {}
            for kind, image in thumbs.items():
                links[kind] = f'page/{stem}_{kind}.png'
                save_png(image, os.path.join(web_dir, links[kind]))
            ims = [links['composite'], f'images/{stem}.png', links['real'], links['mask']]
            gain = row['comp_mse'] - row['mse']
            txts = [f'{stem} ({row["subset"]}) MSE {row["comp_mse"]:.1f}',
                    f'harmonized MSE {row["mse"]:.1f} (gain {gain:.1f}) fMSE {row["fmse"]:.1f}',
                    'real', f'mask ({100 * row["fg_ratio"]:.1f}%)']
            html.add_images(ims, txts)
    return html.save()


# ----------------------------------------------------------------------------- entry point
def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    setup_logging('--verbose' in argv)
    options = TestOptions()
    opt = options.parse(argv)
    if opt.preprocess not in ('resize', 'none'):
        raise ValueError(f'--preprocess {opt.preprocess} is a training augmentation: test with resize (the '
                         'protocol, the default) or none (original sizes, --batch_size 1)')
    torch.manual_seed(opt.seed)
    if opt.baseline == 'none':
        resolve_architecture(options, opt, argv)
    logger.info('options saved to %s', options.save(opt))

    dataset = data.create_dataset(opt, 'test')
    if math.isfinite(opt.num_test):
        dataset = Subset(dataset, range(min(len(dataset), max(0, int(opt.num_test)))))
    if len(dataset) == 0:
        raise ValueError(f'no test images to evaluate in {opt.dataset_root} (--num_test {opt.num_test})')

    model = None
    if opt.baseline == 'none':
        model = models.create_model(opt)
        model.setup()
    protocol = describe_protocol(opt)
    logger.info('%s', protocol)

    web_dir = results_folder(opt)
    image_dir = os.path.join(web_dir, 'images')
    os.makedirs(image_dir, exist_ok=True)
    threads = torch.get_num_threads()
    start = time.perf_counter()
    try:
        if networks_in_workers(model, opt):
            torch.set_num_threads(1)  # the workers run with one thread each; --num_threads 0 likewise
            warm_up(model, opt)
            loader = data.create_dataloader(opt, HarmonizingDataset(dataset, model), shuffle=False)
        else:
            loader = data.create_dataloader(opt, dataset, shuffle=False)
        rows = evaluate(model, loader, opt, image_dir)
    finally:
        torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    check_unique_stems(rows)

    groups = metrics.summarize(rows)
    empty = len(rows) - groups['all']['n_fg']
    if empty:
        logger.warning('%d image(s) have an empty foreground after resizing: their fMSE and fPSNR are NaN and '
                       'left out of the fMSE/fPSNR means', empty)
    settings = {'name': opt.name, 'baseline': opt.baseline, 'psnr_peak': opt.psnr_peak,
                'dataset_root': opt.dataset_root, 'num_images': len(rows), 'num_empty_foreground': empty,
                'batch_size': opt.batch_size, 'seconds': seconds, 'images_per_second': len(rows) / seconds,
                'protocol': protocol}
    if model is not None:
        settings.update({key: getattr(opt, key) for key in ('epoch', 'load_iter', 'eval', 'no_dropout', 'seed',
                                                            'invert_mask', 'ngf', 'ndf', 'style_dim')})
    write_csv(rows, os.path.join(web_dir, 'metrics.csv'))
    write_summary(groups, settings, os.path.join(web_dir, 'summary.json'))
    title = f'{opt.name}, {os.path.basename(web_dir)}: {len(rows)} images'
    write_html(web_dir, rows, dataset, opt.num_html, title, baseline=model is None)
    logger.info('%d images in %.1f s (%.2f images/s); results in %s', len(rows), seconds, len(rows) / seconds,
                web_dir)

    print(protocol)
    print(metrics.format_table(groups))
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
