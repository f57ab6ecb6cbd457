"""Images per second of test.py against the released evaluation procedure, on the CPU, in one run.

* ``test.py``: its own evaluation loop: ``--num_threads`` loader worker processes that each load and
  harmonize their images (one torch thread per image), one extractor pass (the background code) and one
  generator pass per image under ``torch.inference_mode``, the networks' large convolutions with
  prepacked weights (``models/prepack.py``, bit-identical outputs), scoring in the main process.
* ``released procedure``: a loop that follows the released test: batch size 1, loading in the main
  process, the training forward (four extractor passes and the generator, train-mode BatchNorm on the
  single image) under ``torch.no_grad`` as pix2pix's ``BaseModel.test`` did, PyTorch's own convolution
  calls.

Both score every image with the same metrics (MSE, PSNR, fMSE, fPSNR, SSIM) and save the same PNG, so
the comparison is of the procedures alone. Both use the same untrained weights (speed does not depend on
the values) and the same dataset: ``scripts/make_synthetic_dataset.py`` output unless ``--dataset_root``
is given. Runs alternate (test.py, released, test.py, released, ...) and the best of ``--repeats`` runs
counts, so that load from other processes affects both alike. Prints a Markdown table.

    python scripts/benchmark_test.py                      # about 2 minutes on 2 cores
    python scripts/benchmark_test.py --num_images 64 --repeats 3
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch.utils.data import DataLoader, Subset, default_collate

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import test as test_script  # noqa: E402
from data import create_dataset  # noqa: E402
from models import create_model, networks  # noqa: E402
from models.checkpoint import atomic_save, plain_state_dict  # noqa: E402
from options.test_options import TestOptions  # noqa: E402
from util import metrics  # noqa: E402
from util.cli import run_main, setup_logging  # noqa: E402
from util.image import input_to_uint8, output_to_uint8, save_png  # noqa: E402

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
    p.add_argument('--work_dir', default='', help='where data, weights and results go (default: a temp folder)')
    p.add_argument('--torch_threads', type=int, default=0,
                   help="torch's intra-op threads for both procedures (0: torch's default, one per core)")
    p.add_argument('--no_breakdown', dest='breakdown', action='store_false',
                   help='skip the table of CPU time per stage')
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


def save_weights(checkpoints: Path, ngf: int) -> None:
    """Untrained weights of the released architecture as ``<checkpoints>/bench/latest_net_{G,E}.pth``."""
    torch.manual_seed(0)
    atomic_save(plain_state_dict(networks.define_G(20, 3, ngf, 's2ad', 'batch', True, 16)),
                str(checkpoints / 'bench' / 'latest_net_G.pth'))
    atomic_save(plain_state_dict(networks.define_E(16, 64, 'batch')), str(checkpoints / 'bench' / 'latest_net_E.pth'))


def run_test_script(common: list[str], results: Path, batch_size: int, workers: int, *extra: str) -> float:
    """Seconds of test.py's evaluation loop (loading, networks, metrics, PNGs; not start-up)."""
    argv = common + ['--results_dir', str(results), '--batch_size', str(batch_size), '--num_threads', str(workers),
                     *extra]
    with contextlib.redirect_stdout(io.StringIO()):
        if test_script.main(argv) != 0:
            raise RuntimeError('test.py failed')
    summary = json.loads((results / 'bench' / 'latest_test' / 'summary.json').read_text())
    return summary['settings']['seconds']


def run_released(common: list[str], results: Path, num_images: int) -> float:
    """Seconds of a per-image loop that follows the released test procedure (see the module docstring)."""
    opt = TestOptions().parse(common + ['--results_dir', str(results), '--batch_size', '1', '--num_threads', '0',
                                        '--no_prepack'])  # PyTorch's own convolution calls, as released
    model = create_model(opt)
    model.setup()  # loads the weights, networks in train mode (the released test had no --eval)
    dataset = Subset(create_dataset(opt, 'test'), range(num_images))
    loader = DataLoader(dataset, batch_size=1, shuffle=False, num_workers=0)
    image_dir = results / 'released' / 'images'
    image_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with torch.no_grad():
        for batch in loader:
            model.set_input(batch)
            model.forward()  # the training forward: z_b, z_f, harm, ẑ_f, z̃_f
            out = output_to_uint8(model.harm)
            real = input_to_uint8(batch['real'])
            mask = batch['mask_metric'][:, 0].numpy() > 0.5
            metrics.image_metrics(out, real, mask, opt.psnr_peak)
            metrics.mse(input_to_uint8(batch['comp']), real)
            save_png(out[0], str(image_dir / (Path(batch['comp_path'][0]).stem + '.png')))
    return time.perf_counter() - start


def same_images(first: Path, second: Path) -> tuple[int, int]:
    """How many PNGs of ``second`` ``first`` has byte for byte, and how many ``second`` has."""
    files = sorted(second.glob('*.png'))
    same = sum((first / f.name).is_file() and (first / f.name).read_bytes() == f.read_bytes() for f in files)
    return same, len(files)


def cpu_breakdown(common: list[str], results: Path,
                  num_images: int) -> tuple[dict[str, tuple[float, float]], float]:
    """CPU milliseconds per image of each stage on one thread, for (test.py, released procedure), and of
    test.py's networks without prepacking.

    Thread CPU time does not count waiting for other processes, so these numbers hold on a busy machine too;
    they show where the time goes and which part the two procedures share.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        opt = TestOptions().parse(common + ['--results_dir', str(results)])
        model = create_model(opt)
        model.setup()  # test.py's model: the large convolutions of G and E prepacked
        plain = create_model(TestOptions().parse(common + ['--results_dir', str(results), '--no_prepack']))
        plain.setup()  # the released procedure's: PyTorch's own convolution calls
        dataset = create_dataset(opt, 'test')
        k = min(num_images, 4)  # the networks and metrics cost the same for every 256×256 image
        batches = [default_collate([dataset[i]]) for i in range(k)]

        def per_image(fn) -> float:
            best = math.inf
            for _ in range(2):
                start = time.thread_time()
                for b in batches:
                    fn(b)
                best = min(best, time.thread_time() - start)
            return 1000 * best / k

        def ours(b: dict) -> None:
            model.set_input(b)
            model.test()

        def ours_plain(b: dict) -> None:
            plain.set_input(b)
            plain.test()

        def released(b: dict) -> None:
            with torch.no_grad():
                plain.set_input(b)
                plain.forward()

        def score(b: dict) -> None:
            out, real = output_to_uint8(b['comp']), input_to_uint8(b['real'])
            metrics.image_metrics(out, real, b['mask_metric'][:, 0].numpy() > 0.5, opt.psnr_peak)
            metrics.mse(input_to_uint8(b['comp']), real)

        def save(b: dict) -> None:
            save_png(input_to_uint8(b['comp'])[0], str(results / 'breakdown.png'))

        start = time.thread_time()
        for i in range(num_images):  # all of them: sizes differ between sub-datasets
            dataset[i]
        load = 1000 * (time.thread_time() - start) / num_images
        stages = {'loading (decode, resize)': (load, load),
                  'networks': (per_image(ours), per_image(released)),
                  'metrics (SSIM included)': (per_image(score),) * 2,
                  'PNG': (per_image(save),) * 2}
        plain_networks = per_image(ours_plain)
    finally:
        torch.set_num_threads(threads)
    return stages, plain_networks


def cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    if not args.verbose:
        logging.getLogger().setLevel(logging.WARNING)
    with contextlib.ExitStack() as stack:
        work = Path(args.work_dir) if args.work_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        root = Path(args.dataset_root) if args.dataset_root else make_dataset(work / 'data', args.num_images)
        save_weights(work / 'checkpoints', args.ngf)
        common = ['--name', 'bench', '--dataset_root', str(root), '--checkpoints_dir', str(work / 'checkpoints'),
                  '--gpu_ids', '-1', '--num_test', str(args.num_images), '--num_html', '0', '--ngf', str(args.ngf),
                  '--ndf', '64']
        n = len(create_dataset(TestOptions().parse(common), 'test'))
        n = min(n, args.num_images)
        load_before = os.getloadavg()[0]
        ours, plain, released = [], [], []
        for r in range(args.repeats):
            ours.append(run_test_script(common, work / f'ours{r}', args.batch_size, args.num_threads))
            plain.append(run_test_script(common, work / f'plain{r}', args.batch_size, args.num_threads,
                                         '--no_prepack'))
            released.append(run_released(common, work / f'released{r}', n))
            logger.warning('run %d: test.py %.1f s, test.py --no_prepack %.1f s, released procedure %.1f s', r + 1,
                           ours[-1], plain[-1], released[-1])
        load_after = os.getloadavg()[0]
        same, total = same_images(*(work / d / 'bench' / 'latest_test' / 'images' for d in ('ours0', 'plain0')))
        stages, plain_networks = cpu_breakdown(common, work / 'breakdown', n) if args.breakdown else ({}, math.nan)

    best_ours, best_plain, best_released = min(ours), min(plain), min(released)
    print(f'CPU: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} '
          f'threads; load average {load_before:.1f} before, {load_after:.1f} after')
    print(f'{n} images of {root if args.dataset_root else "a generated dataset"}, ngf {args.ngf}, '
          f'best of {args.repeats} alternating runs\n')
    print('| procedure | batch | loader workers | extractor passes | grad mode | s (best) | images/s |')
    print('|---|---:|---:|---:|---|---:|---:|')
    print(f'| released (per image) | 1 | 0 | 4 | no_grad | {best_released:.1f} | {n / best_released:.2f} |')
    print(f'| test.py --no_prepack | {args.batch_size} | {args.num_threads} | 1 | inference_mode | {best_plain:.1f} | '
          f'{n / best_plain:.2f} |')
    print(f'| test.py | {args.batch_size} | {args.num_threads} | 1 | inference_mode | {best_ours:.1f} | '
          f'{n / best_ours:.2f} |')

    def runs(times: list[float]) -> str:
        return ', '.join(f'{t:.1f}' for t in times)

    print(f'\nspeed-up: {best_released / best_ours:.2f}x ({best_released / best_plain:.2f}x without prepacking); '
          f'all runs: test.py {runs(ours)} s; --no_prepack {runs(plain)} s; released {runs(released)} s')
    print(f'harmonized images byte-identical with and without prepacking: {same} of {total}')
    if stages:
        print('\nCPU time per image on one thread (ms; not affected by other processes):\n')
        print('| stage | test.py | released |')
        print('|---|---:|---:|')
        for name, (a, b) in stages.items():
            print(f'| {name} | {a:.1f} | {b:.1f} |')
        total_a, total_b = (sum(v[i] for v in stages.values()) for i in (0, 1))
        print(f'| total | {total_a:.1f} | {total_b:.1f} |')
        print(f'\ntest.py networks without prepacking (--no_prepack): {plain_networks:.1f} ms per image; prepacking '
              f'saves {100 * (1 - stages["networks"][0] / plain_networks):.0f}% of their CPU time')
        print(f'work ratio: {total_b / total_a:.2f}x; test.py gains more only where loading and scoring run '
              'on otherwise idle cores (loader workers, the scoring thread)')
    return 0


if __name__ == '__main__':
    sys.exit(run_main(main))
