"""Images per second of test.py against the released per-image test procedure, side by side in one run.

* ``test.py``: its evaluation loop as users run it: ``--num_threads`` loader workers decode and resize, the
  main process harmonizes batches of ``--batch_size`` (one extractor pass for the background code and one
  generator pass per batch, ``torch.inference_mode``) while a thread scores the previous batch (MSE, PSNR,
  fMSE, fPSNR and SSIM of the harmonized image and of the composite) and writes the PNGs.
* ``released procedure``: the released test loop, written out here: one image at a time in the main process,
  OpenCV reading and resizing, the training forward of the released model under ``torch.no_grad`` (four
  extractor passes and the generator, networks in training mode: each image's own BatchNorm statistics),
  ``tensor2im``, scikit-image's MSE and PSNR, the fMSE on PIL's mode-1 mask, the PNG saved by PIL.

Both use the same untrained weights without dropout (speed does not depend on the values) and the same
dataset (``scripts/make_synthetic_dataset.py`` output unless ``--dataset_root`` is given). Runs alternate
(test.py, released, test.py, released, ...) and the best of ``--repeats`` counts, so that load from other
processes affects both alike. Prints a Markdown table and the speed-up.

    python scripts/benchmark_test.py                      # a few minutes on 2 cores
    python scripts/benchmark_test.py --num_images 8 --repeats 1 --ngf 16
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import torch
from PIL import Image
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / 'scripts'):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import test as test_script  # noqa: E402
from benchmark_loading import cpu_name  # noqa: E402
from data.lists import read_list  # noqa: E402
from models.checkpoint import atomic_save, plain_state_dict  # noqa: E402
from models.factory import Architecture, create_networks, resolve_gpu_ids, select_device  # noqa: E402
from options.base_options import parse_gpu_ids  # noqa: E402
from util.cli import run_main, setup_logging  # noqa: E402

logger = logging.getLogger('benchmark_test')


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--dataset_root', default='', help='an iHarmony4-layout dataset (default: a generated one)')
    p.add_argument('--num_images', type=int, default=16, help='test images per run')
    p.add_argument('--ngf', type=int, default=64, help='generator width (64: the released model)')
    p.add_argument('--batch_size', type=int, default=8, help="test.py's --batch_size")
    p.add_argument('--num_threads', type=int, default=2, help="test.py's loader workers (--num_threads)")
    p.add_argument('--repeats', type=int, default=3, help='runs of each procedure, alternating; the best counts')
    p.add_argument('--gpu_ids', default='-1', help='-1: the CPU; 0: the first GPU, for both procedures')
    p.add_argument('--work_dir', default='', help='where data, weights and results go (default: a temp folder)')
    p.add_argument('--verbose', action='store_true', help='show the logs of the runs')
    args = p.parse_args(argv)
    if args.num_images < 1 or args.repeats < 1 or args.batch_size < 1 or args.num_threads < 0:
        raise ValueError('--num_images, --repeats and --batch_size must be positive, --num_threads >= 0')
    return args


def make_dataset(out: Path, num_images: int) -> Path:
    """A synthetic iHarmony4-layout dataset with at least ``num_images`` test composites (2 test photos)."""
    cmd = [sys.executable, str(ROOT / 'scripts' / 'make_synthetic_dataset.py'), '--out', str(out),
           '--test_photos', '2', '--per_photo', str(max(2, math.ceil(num_images / 2)))]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


def run_test_script(common: list[str], results: Path, batch_size: int, workers: int, verbose: bool) -> float:
    """Seconds of test.py's evaluation loop (loading, networks, metrics, PNGs; not start-up or the page)."""
    argv = common + ['--results_dir', str(results), '--batch_size', str(batch_size), '--num_threads', str(workers)]
    with contextlib.ExitStack() as quiet:
        quiet.enter_context(contextlib.redirect_stdout(io.StringIO()))
        if not verbose:  # test.py sets up its logging on the stderr of the moment
            quiet.enter_context(contextlib.redirect_stderr(io.StringIO()))
        test_script.main(argv)
    setup_logging(verbose)
    if not verbose:
        logging.getLogger().setLevel(logging.WARNING)
    summary = json.loads((results / 'bench' / 'latest_test' / 'summary.json').read_text())
    return summary['settings']['seconds']


def released_loop(root: Path, netG: torch.nn.Module, netE: torch.nn.Module, device: torch.device,
                  num_images: int, image_dir: Path, size: int = 256) -> float:
    """Seconds of the released per-image test procedure over the first ``num_images`` test composites."""
    samples, problems = read_list(str(root), 'test', limit=num_images)
    if problems:
        raise ValueError(problems[0].message)
    netG, netE = copy.deepcopy(netG).to(device).train(), copy.deepcopy(netE).to(device).train()
    image_dir.mkdir(parents=True, exist_ok=True)

    def tensor(a: np.ndarray) -> torch.Tensor:  # ToTensor + Normalize(0.5, 0.5)
        return (torch.from_numpy(a.transpose(2, 0, 1).copy()).float().div(255) - 0.5).div(0.5)[None].to(device)

    def tensor2im(t: torch.Tensor) -> np.ndarray:
        return ((t[0].cpu().float().numpy().transpose(1, 2, 0) + 1) / 2.0 * 255.0).astype(np.uint8)

    start = time.perf_counter()
    for s in samples:
        comp, real = (cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in (s.comp, s.real))
        mask = (cv2.imread(s.mask)[..., 0] / 255).astype(np.uint8)
        comp, real, mask = (cv2.resize(a, (size, size), interpolation=cv2.INTER_LINEAR) for a in (comp, real, mask))
        comp, real = tensor(comp), tensor(real)
        m = torch.from_numpy(mask.astype(np.float32))[None, None].to(device)
        with torch.no_grad():  # the training forward: z_b, z_f, harm, ẑ_f, z̃_f
            z_b = netE(real, 1 - m)
            netE(real, m)
            harm = netG(comp, m, z_b)
            netE(harm, m)
            netE(comp, m)
        out, gt = tensor2im(harm).astype(np.float32), tensor2im(real).astype(np.float32)
        fg = np.array(Image.open(s.mask).convert('1').resize((size, size)), dtype=np.uint8)[..., None]
        mean_squared_error(out, gt)
        mean_squared_error(out * fg, gt * fg) * size * size / max(int(fg.sum()), 1)
        peak_signal_noise_ratio(gt, out, data_range=out.max() - out.min())
        Image.fromarray(out.astype(np.uint8)).save(image_dir / (Path(s.comp).stem + '.png'))
    return time.perf_counter() - start


def same_images(first: Path, second: Path) -> tuple[int, int]:
    """How many PNGs of ``second`` ``first`` has with the same pixels, and how many ``second`` has."""
    files = sorted(second.glob('*.png'))
    same = sum((first / f.name).is_file() and np.array_equal(np.asarray(Image.open(first / f.name)),
                                                             np.asarray(Image.open(f))) for f in files)
    return same, len(files)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)
    device = select_device(resolve_gpu_ids(parse_gpu_ids(args.gpu_ids)))
    with contextlib.ExitStack() as stack:
        work = Path(args.work_dir) if args.work_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        root = Path(args.dataset_root) if args.dataset_root else make_dataset(work / 'data', args.num_images)
        torch.manual_seed(0)
        netG, netE = create_networks(Architecture(ngf=args.ngf, ndf=64, use_dropout=False))
        for net, kind in ((netG, 'G'), (netE, 'E')):
            atomic_save(plain_state_dict(net), str(work / 'checkpoints' / 'bench' / f'latest_net_{kind}.pth'))
        n = min(args.num_images, len(read_list(str(root), 'test')[0]))
        common = ['--name', 'bench', '--dataset_root', str(root), '--checkpoints_dir', str(work / 'checkpoints'),
                  '--gpu_ids', args.gpu_ids, '--num_test', str(n), '--num_html', '0', '--no_dropout', '--no_eval']
        load_before = os.getloadavg()[0]
        ours, released = [], []
        for r in range(args.repeats):
            ours.append(run_test_script(common, work / f'ours{r}', args.batch_size, args.num_threads, args.verbose))
            released.append(released_loop(root, netG, netE, device, n, work / f'released{r}'))
            logger.warning('run %d: test.py %.1f s, released procedure %.1f s', r + 1, ours[-1], released[-1])
        load_after = os.getloadavg()[0]
        same, total = same_images(work / 'released0', work / 'ours0' / 'bench' / 'latest_test' / 'images')

    best_ours, best_released = min(ours), min(released)
    where = (f'GPU {torch.cuda.get_device_name(device)}' if device.type == 'cuda' else
             f'CPU {cpu_name()}, {os.cpu_count()} cores')
    print(f'{where}, torch {torch.__version__} with {torch.get_num_threads()} threads; load average '
          f'{load_before:.1f} before, {load_after:.1f} after')
    print(f'{n} images of {root if args.dataset_root else "a generated dataset"}, ngf {args.ngf}, '
          f'best of {args.repeats} alternating runs\n')
    print('| procedure | batch | loader workers | extractor passes | s (best) | images/s |')
    print('|---|---:|---:|---:|---:|---:|')
    print(f'| released (per image) | 1 | 0 | 4 | {best_released:.2f} | {n / best_released:.2f} |')
    print(f'| test.py | {args.batch_size} | {args.num_threads} | 1 | {best_ours:.2f} | {n / best_ours:.2f} |')
    print(f'\nspeed-up of test.py: {best_released / best_ours:.2f}x; all runs: test.py '
          f'{", ".join(f"{t:.2f}" for t in ours)} s; released {", ".join(f"{t:.2f}" for t in released)} s')
    print(f'harmonized images with the same pixels as the released procedure\'s: {same} of {total}'
          + (' (batched convolutions round differently: a level on a few pixels)' if args.batch_size > 1 else ''))
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
