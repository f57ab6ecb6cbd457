"""Training and inference throughput of BargainNet: samples per second and peak memory, per batch size.

Each configuration (device, mode, precision, batch size) runs in a fresh process, so that its peak memory is
its own: on the CPU the peak resident memory of the process (``ru_maxrss``, torch's libraries included) and
how far it rose above the resident memory once the model was built; on a GPU
``torch.cuda.max_memory_allocated`` (weights, optimizer state and activations).
Inputs are random 256×256 tensors made once (no disk I/O): this measures the model step, not data loading.
Each step is timed on its own (after a GPU synchronize) and the fastest of ``--steps`` counts, since other
processes on the machine can only slow a step down.

* ``train``: ``set_input`` + ``optimize_parameters`` (the four extractor passes, the generator, both losses,
  backward and two Adam steps), as in train.py.
* ``infer``: ``harmonize`` as test.py runs it (one extractor pass, one generator pass, per-image BatchNorm
  and dropout: the released protocol).
* ``released infer`` (added with ``infer``, batch 1, fp32): the released test step, which ran the training
  forward (four extractor passes and the generator) on one image under ``no_grad``.

The released code trained and tested one sample at a time in fp32: ``vs released`` compares each row with the
released step of its device (for training: the batch-1 fp32 training step, which is the released one). The
sweep runs ``--repeats`` times and each configuration keeps its best run. Prints a Markdown table (and writes it
with ``--out``).

    python scripts/benchmark.py                                   # CPU: about 4 minutes on 2 idle cores
    python scripts/benchmark.py --device cuda --batch_sizes 1,4,16 --amp none,bf16
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'),
                   help='auto: the CPU, and the first GPU too when CUDA is available')
    p.add_argument('--modes', default='train,infer', help='comma-separated: train, infer')
    p.add_argument('--batch_sizes', default='1,4,16', help='comma-separated batch sizes')
    p.add_argument('--amp', default='', help='comma-separated precisions (none, bf16, fp16); '
                                             'default: none on the CPU, none and bf16 on a GPU')
    p.add_argument('--steps', type=int, default=0, help='timed steps per configuration (default: 2 on the CPU, '
                                                        '20 on a GPU)')
    p.add_argument('--warmup', type=int, default=0, help='untimed steps first (default: 1 on the CPU, 5 on a GPU)')
    p.add_argument('--ngf', type=int, default=64, help='generator width (64: the released model)')
    p.add_argument('--ndf', type=int, default=64, help='extractor width (64: the released model)')
    p.add_argument('--size', type=int, default=256, help='image side (a multiple of 256)')
    p.add_argument('--channels_last', action='store_true', help='channels-last memory format')
    p.add_argument('--compile', action='store_true', help='torch.compile the networks')
    p.add_argument('--threads', type=int, default=0, help='CPU threads (0: torch default)')
    p.add_argument('--repeats', type=int, default=2,
                   help='run the whole sweep this many times and keep each configuration\'s best (shared machines)')
    p.add_argument('--out', default='', help='also write the Markdown table to this file')
    p.add_argument('--worker', default='', help=argparse.SUPPRESS)  # JSON of one configuration (internal)
    return p.parse_args(argv)


def _current_rss_mib() -> float:
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20
    except (OSError, ValueError):
        return float('nan')


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == 'darwin' else peak / 2 ** 10  # bytes on macOS, KiB on Linux


def run_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Measure one configuration in this process (called in a fresh worker process)."""
    import torch

    from models import create_model
    from options.test_options import TestOptions
    from options.train_options import TrainOptions

    if cfg['threads']:
        torch.set_num_threads(cfg['threads'])
    cuda = cfg['device'] == 'cuda'
    torch.manual_seed(0)
    tmp = tempfile.mkdtemp(prefix='bench_')
    common = ['--gpu_ids', '0' if cuda else '-1', '--ngf', str(cfg['ngf']), '--ndf', str(cfg['ndf']),
              '--batch_size', str(cfg['batch']), '--amp', cfg['amp'], '--checkpoints_dir', tmp, '--name', 'bench',
              '--crop_size', str(cfg['size']), '--load_size', str(cfg['size'])]
    common += ['--channels_last'] if cfg['channels_last'] else []
    common += ['--compile'] if cfg['compile'] else []
    model = create_model(TrainOptions().parse(common + ['--display_id', '0']))
    if cfg['mode'] == 'released infer':
        model.train()  # the released test: train-mode BatchNorm on the single image, dropout on
    if cfg['mode'] == 'infer':
        model.save_networks('latest')  # untrained weights: speed does not depend on the values
        model = create_model(TestOptions().parse(common))
    model.setup()

    b, s = cfg['batch'], cfg['size']
    g = torch.Generator().manual_seed(0)
    real = torch.rand(b, 3, s, s, generator=g) * 2 - 1
    mask = torch.zeros(b, 1, s, s)
    mask[:, :, s // 4:3 * s // 4, s // 8:5 * s // 8] = 1
    comp = torch.where(mask.bool(), (real * 0.7 + 0.2).clamp(-1, 1), real)
    if cuda:
        real, mask, comp = real.pin_memory(), mask.pin_memory(), comp.pin_memory()
    batch = {'comp': comp, 'real': real, 'mask': mask, 'index': torch.arange(b),
             'comp_path': [f'{i}.jpg' for i in range(b)]}

    def step() -> None:
        model.set_input(batch)
        if cfg['mode'] == 'train':
            model.optimize_parameters()
        elif cfg['mode'] == 'released infer':
            with torch.no_grad():
                model.forward()
        else:
            model.harmonize(model.comp, model.mask, model.sample_seeds)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    rss_model = _current_rss_mib()
    for _ in range(cfg['warmup']):
        step()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(cfg['steps']):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    best = min(times)  # other processes on the machine only ever slow a step down
    out = {**cfg, 'samples_per_s': b / best, 'step_s': best, 'mean_step_s': sum(times) / len(times)}
    if cuda:
        out['peak_mib'] = torch.cuda.max_memory_allocated() / 2 ** 20
    else:
        out['peak_mib'] = _peak_rss_mib()
        out['rss_model_mib'] = rss_model
    return out


def machine_description(devices: Sequence[str]) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
        if names:
            cpu = names[0]
    except OSError:
        pass
    parts = [f'CPU: {cpu}, {os.cpu_count()} logical cores, {torch.get_num_threads()} torch threads']
    if 'cuda' in devices:
        parts.append(f'GPU: {torch.cuda.get_device_name(0)}')
    parts.append(f'torch {torch.__version__}, Python {platform.python_version()}')
    return '; '.join(parts)


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = ['| device | mode | precision | batch | samples/s | vs released | best step (s) | peak memory (MiB) |',
             '|---|---|---|---|---|---|---|---|']
    base = {(r['device'], r['mode']): r['samples_per_s'] for r in rows if r['batch'] == 1 and r['amp'] == 'none'}
    base.update({(d, 'infer'): v for (d, m), v in list(base.items()) if m == 'released infer'})
    for r in rows:
        ref = base.get((r['device'], r['mode']))
        ratio = f'{r["samples_per_s"] / ref:.2f}×' if ref else '–'
        mem = f'{r["peak_mib"]:.0f}'
        if r['device'] == 'cpu':
            mem += f' RSS ({r["peak_mib"] - r["rss_model_mib"]:.0f} above the loaded model)'
        lines.append(f'| {r["device"]} | {r["mode"]} | {"fp32" if r["amp"] == "none" else r["amp"]} | {r["batch"]} '
                     f'| {r["samples_per_s"]:.2f} | {ratio} | {r["step_s"]:.3f} | {mem} |')
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.worker:
        print('RESULT ' + json.dumps(run_config(json.loads(args.worker))), flush=True)
        return 0
    import torch

    if args.device == 'auto':
        devices = ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])
    else:
        devices = [args.device]
    if 'cuda' in devices and not torch.cuda.is_available():
        print('error: --device cuda but CUDA is not available', file=sys.stderr)
        return 2
    configs = []
    for device in devices:
        cuda = device == 'cuda'
        amps = [a for a in args.amp.split(',') if a] or (['none', 'bf16'] if cuda else ['none'])
        for mode in [m for m in args.modes.split(',') if m]:
            if mode not in ('train', 'infer'):
                print(f'error: --modes takes train and infer, got {mode!r}', file=sys.stderr)
                return 2
            runs = [(amp, batch) for amp in amps for batch in [int(x) for x in args.batch_sizes.split(',') if x]]
            for run_mode, amp, batch in ([('released infer', 'none', 1)] if mode == 'infer' else []) + \
                    [(mode, amp, batch) for amp, batch in runs]:
                configs.append({'device': device, 'mode': run_mode, 'amp': amp, 'batch': batch, 'ngf': args.ngf,
                                'ndf': args.ndf, 'size': args.size, 'channels_last': args.channels_last,
                                'compile': args.compile, 'threads': args.threads,
                                'steps': args.steps or (20 if cuda else 2),
                                'warmup': args.warmup or (5 if cuda else 1)})
    load_before = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    best: dict[int, dict[str, Any]] = {}
    for repeat in range(max(1, args.repeats)):
        for i, cfg in enumerate(configs):
            proc = subprocess.run([sys.executable, __file__, '--worker', json.dumps(cfg)], cwd=ROOT,
                                  capture_output=True, text=True)
            result = [line for line in proc.stdout.splitlines() if line.startswith('RESULT ')]
            name = f'{cfg["device"]} {cfg["mode"]} {cfg["amp"]} batch {cfg["batch"]}'
            if proc.returncode != 0 or not result:
                print(f'error: {name} failed:\n{proc.stderr[-3000:]}', file=sys.stderr)
                return 1
            row = json.loads(result[0][len('RESULT '):])
            print(f'[{repeat + 1}/{args.repeats}] {name}: {row["samples_per_s"]:.2f} samples/s, '
                  f'peak {row["peak_mib"]:.0f} MiB', file=sys.stderr, flush=True)
            if i not in best or row['samples_per_s'] > best[i]['samples_per_s']:
                best[i] = row
    rows = [best[i] for i in range(len(configs))]
    load_after = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    text = (f'ngf {args.ngf}, ndf {args.ndf}, {args.size}×{args.size}, best of {args.repeats} runs, '
            f'1-minute load average {load_before:.1f} before and {load_after:.1f} after; '
            f'{"channels_last, " if args.channels_last else ""}{"compiled, " if args.compile else ""}'
            f'{machine_description(devices)}\n\n{format_table(rows)}\n')
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
