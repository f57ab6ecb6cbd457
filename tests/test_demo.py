"""The demo: the shipped demo model and the `make demo` pipeline at toy size."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from models import checkpoint, networks

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / 'checkpoints' / 'demo'
COLUMNS = ('n', 'mse', 'psnr', 'fmse', 'fpsnr', 'ssim')


def readme_row(label: str) -> dict[str, float]:
    """The numbers README.md states for ``label`` in the demo table."""
    for line in (ROOT / 'README.md').read_text().splitlines():
        if line.startswith(f'| {label} |'):
            cells = [c.strip() for c in line.strip('|').split('|')[1:]]
            return {k: float(v) for k, v in zip(COLUMNS, cells)}
    raise AssertionError(f'README.md has no row "| {label} |"')


def test_demo_model_loads_strictly_in_released_format():
    state_G = checkpoint.load_state_dict_file(str(DEMO / 'latest_net_G.pth'))
    state_E = checkpoint.load_state_dict_file(str(DEMO / 'latest_net_E.pth'))
    arch = checkpoint.infer_architecture(state_G, state_E)
    G = networks.define_G(4 + arch['style_dim'], 3, arch['ngf'], 's2ad', style_dim=arch['style_dim'])
    E = networks.define_E(arch['style_dim'], arch['ndf'])
    G.load_state_dict(state_G, strict=True)
    E.load_state_dict(state_E, strict=True)
    size = sum(os.path.getsize(DEMO / f) for f in ('latest_net_G.pth', 'latest_net_E.pth'))
    assert size <= 25 * 1024 * 1024


def run(cmd: list[str], **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, 'PYTHON': sys.executable, 'OMP_NUM_THREADS': '2', **env}
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=900)


def build_demo_dataset(out: Path) -> None:
    """The dataset of scripts/demo.sh and scripts/train_demo_model.sh (the same command)."""
    text = (ROOT / 'scripts' / 'demo.sh').read_text()
    args = ['--per_photo', '96', '--views', '24', '--large_side', '0', '--max_side', '640', '--gray_photos',
            '--view_jitter', '1', '--seed', '0']
    assert 'PER_PHOTO:-96' in text
    assert ' '.join(args).replace('96', '"$PER_PHOTO"').replace(' --max', ' \\\n    --max') in text
    trainer = (ROOT / 'scripts' / 'train_demo_model.sh').read_text()
    assert ' '.join(args[:6]) + '\n             ' + ' '.join(args[6:-1]) + ' "$SEED")' in trainer
    res = run([sys.executable, 'scripts/make_synthetic_dataset.py', '--out', str(out)] + args)
    assert res.returncode == 0, res.stderr


def test_demo_model_numbers_match_readme(tmp_path):
    data = tmp_path / 'data'
    build_demo_dataset(data)
    res = run([sys.executable, 'test.py', '--dataset_root', str(data), '--results_dir', str(tmp_path / 'res'),
               '--gpu_ids', '-1', '--checkpoints_dir', 'checkpoints', '--name', 'demo', '--no_dropout', '--eval',
               '--batch_size', '8', '--num_threads', '2'])
    assert res.returncode == 0, res.stderr
    got = json.loads((tmp_path / 'res' / 'demo' / 'latest_test' / 'summary.json').read_text())['groups']['all']
    stated = readme_row('demo model')
    assert got['n'] == stated['n']
    for key in COLUMNS[1:]:  # README rounds to 2 (SSIM 4) decimals; other CPUs may differ in the last bits
        assert got[key] == pytest.approx(stated[key], rel=0.01, abs=0.011), key


def test_train_demo_model_script_at_toy_size(tiny_dataset, tmp_path):
    """scripts/train_demo_model.sh's two stages at toy size: stage 2 starts from stage 1's weights with fresh
    optimizers, and the record states both commands and the sample count."""
    out = tmp_path / 'ck'
    res = run(['bash', 'scripts/train_demo_model.sh'], DEMO_DATA=str(tiny_dataset), DEMO_CHECKPOINTS=str(out),
              DEMO_NITER='1', DEMO_NITER_DECAY='0', DEMO_FT_NITER='0', DEMO_FT_NITER_DECAY='1')
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    demo = out / 'demo'
    assert sorted(p.name for p in demo.iterdir()) == ['TRAINING.md', 'latest_net_E.pth', 'latest_net_G.pth',
                                                      'loss_log.txt', 'train_opt.txt']
    assert re.search(r'no training state \S+: continuing from the weights', res.stderr)
    state_G = checkpoint.load_state_dict_file(str(demo / 'latest_net_G.pth'))
    state_E = checkpoint.load_state_dict_file(str(demo / 'latest_net_E.pth'))
    assert checkpoint.infer_architecture(state_G, state_E) == {'ngf': 16, 'ndf': 16, 'style_dim': 16}
    assert (demo / 'loss_log.txt').read_text().count('Training Loss') == 2  # one run per stage
    record = (demo / 'TRAINING.md').read_text()
    assert '--lr 1e-3 --niter 1 --niter_decay 0`' in record
    assert '--lr 3e-4 --niter 0 --niter_decay 1 --continue_train --epoch latest`' in record
    n = len((tiny_dataset / 'IHD_train.txt').read_text().split())
    assert f'(1 + 1) epochs x {n} composites = {2 * n} training samples' in record


def test_paired_comparison_by_hand(tmp_path):
    spec = importlib.util.spec_from_file_location('compare_results', ROOT / 'scripts' / 'compare_results.py')
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    base = {'a': 10.0, 'b': 20.0, 'c': float('nan'), 'd': 4.0}
    other = {'a': 8.0, 'b': 25.0, 'c': 1.0, 'd': 1.0, 'e': 3.0}  # c (NaN in base) and e (not in base) left out
    r = compare.paired(base, other, resamples=2000)
    assert r['n'] == 3 and r['improved'] == 2 and r['mean'] == pytest.approx((2 - 5 + 3) / 3)
    assert -5 <= r['low'] <= r['mean'] <= r['high'] <= 3
    assert compare.paired(base, other, resamples=2000) == r  # a fixed seed
    for name, values in (('x', base), ('y', other)):
        (tmp_path / name).mkdir()
        lines = ['image,mse,fmse'] + [f'{k},{v},{v}' for k, v in values.items()]
        (tmp_path / name / 'metrics.csv').write_text('\n'.join(lines) + '\n')
    assert compare.load_metric(str(tmp_path / 'y'), 'fmse') == other
    with pytest.raises(ValueError, match='share no scored image'):
        compare.paired({'a': 1.0}, {'b': 1.0})


def test_demo_pipeline_at_toy_size(tmp_path):
    res = run(['bash', 'scripts/demo.sh'], DEMO_DATA=str(tmp_path / 'data'), DEMO_RESULTS=str(tmp_path / 'res'),
              DEMO_PER_PHOTO='2', DEMO_ITERS='10', DEMO_NGF='8', DEMO_NUM_TEST='4')
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    rows = [line for line in out.splitlines() if re.match(r'\| (input composites|few-minute model|demo model)', line)]
    assert len(rows) == 3 and all(line.split('|')[2].strip() == '4' for line in rows)
    paired = [line for line in out.splitlines() if re.match(r'\| (MSE|fMSE) \| (few-minute model|demo model)', line)]
    assert len(paired) == 4  # each model against the input composites, image by image
    # the quick model trained and wrote its checkpoints and loss lines
    quick = tmp_path / 'res' / 'checkpoints' / 'quick'
    assert (quick / 'latest_net_G.pth').is_file() and (quick / 'latest_net_E.pth').is_file()
    assert len(re.findall(r'^\(epoch: \d+, iters: \d+', (quick / 'loss_log.txt').read_text(), re.M)) >= 1
    # the composite row is the baseline's summary
    base = json.loads((tmp_path / 'res' / 'inputs' / 'composite_test' / 'summary.json').read_text())['groups']['all']
    assert f'{base["mse"]:.2f}' == rows[0].split('|')[3].strip()
    # examples harmonized at full resolution, with scores before and after
    examples = sorted((ROOT / 'examples' / 'composite').iterdir())
    for src in examples:
        result = tmp_path / 'res' / 'examples' / f'{src.stem}.png'
        assert Image.open(result).size == Image.open(src).size
    assert len(re.findall(r'The harmony score of \S+ is \d\.\d\d before and \d\.\d\d after', out)) == len(examples)
    assert 'index.html' in out
    assert 'error:' not in res.stderr
