"""The demo: the shipped demo model, its recorded numbers, and the `make demo` pipeline at toy size.

The demo model's expected numbers live in ``checkpoints/demo/metrics.json`` with the commands that produced them.
After a change that moves them (evaluation protocol, retrained model), regenerate the file and the table of
``docs/demo.md`` in one command::

    DEMO_METRICS_UPDATE=1 .venv/bin/pytest -q tests/test_demo.py -k metrics
"""
from __future__ import annotations

import csv
import datetime
import json
import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

import models
from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / 'checkpoints' / 'demo'
METRICS = DEMO / 'metrics.json'  # the demo dataset's held-out photos
METRICS_OUTSIDE = DEMO / 'metrics_outside.json'  # scripts/make_outside_composites.py: other photos, other recipes
DEMO_DOC = ROOT / 'docs' / 'demo.md'
COLUMNS = ('n', 'mse', 'psnr', 'fmse', 'fpsnr', 'ssim')
RUNS = ('input composites', 'demo model')  # the table's order; keys of metrics.json's "runs"
TABLES = {path: (f'<!-- begin {kind} metrics: generated from checkpoints/demo/{path.name} by tests/test_demo.py -->',
                 f'<!-- end {kind} metrics -->') for kind, path in (('demo', METRICS), ('outside', METRICS_OUTSIDE))}
UPDATE = os.environ.get('DEMO_METRICS_UPDATE') == '1'


def run(cmd: list[str], **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, 'PYTHON': sys.executable, 'OMP_NUM_THREADS': '2', **env}
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=900)


def command_args(command: str, **replace: str) -> list[str]:
    """A command of metrics.json as an argument list run by this interpreter, with some option values replaced."""
    args = shlex.split(command)
    assert args[0].endswith('python'), command
    args[0] = sys.executable
    for option, value in replace.items():
        flag = f'--{option}'
        assert flag in args, f'{flag} missing from {command}'
        args[args.index(flag) + 1] = value
    return args


def read_summary(results: Path) -> dict[str, Any]:
    """The one summary.json that a test.py run wrote under ``results``."""
    found = list(results.rglob('summary.json'))
    assert len(found) == 1, found
    return json.loads(found[0].read_text())


# ----------------------------------------------------------------------------- the demo model and its numbers
def demo_table(metrics: dict[str, Any]) -> str:
    """The Markdown table of docs/demo.md: every group of metrics.json, input composites above the demo model."""
    runs = metrics['runs']
    lines = [f'Protocol: {metrics["protocol"]}. Computed {metrics["date"]}.', '',
             '| images | run | n | MSE | PSNR | fMSE | fPSNR | SSIM |', '|---|---|---:|---:|---:|---:|---:|---:|']
    for group in runs['demo model']:
        for label in RUNS:
            g = runs[label].get(group)
            if not g or not g['n']:
                continue
            cells = ['-' if g[k] is None else f'{g[k]:.{4 if k == "ssim" else 2}f}' for k in COLUMNS[1:]]
            lines.append(f'| {group} | {label} | {g["n"]} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def write_doc_table(metrics: dict[str, Any], path: Path) -> None:
    text = DEMO_DOC.read_text()
    begin, end = TABLES[path]
    start, stop = text.index(begin) + len(begin), text.index(end)
    DEMO_DOC.write_text(text[:start] + '\n' + demo_table(metrics) + '\n' + text[stop:])


def _rounded(groups: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    keep = ('n',) + COLUMNS[1:]
    return {name: {k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else
                       (v if k == 'n' else round(v, 4))) for k, v in g.items() if k in keep}
            for name, g in groups.items()}


def test_demo_model_loads_strictly_in_released_format():
    netG, netE, arch = models.load_bargainnet(str(DEMO))
    assert (arch.ngf, arch.ndf, arch.style_dim, arch.use_dropout) == (16, 16, 16, False)  # from train_opt.txt
    for net, name in ((netG, 'G'), (netE, 'E')):
        state = torch.load(DEMO / f'latest_net_{name}.pth', map_location='cpu', weights_only=True)
        rows = (ROOT / 'tests' / 'reference' / f'checkpoint_keys_{name}.tsv').read_text().splitlines()[1:]
        assert sorted(state) == sorted(row.split('\t')[0] for row in rows)  # the released key names
        assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    size = sum(os.path.getsize(DEMO / f'latest_net_{n}.pth') for n in 'GE')
    assert size <= 25 * 1024 * 1024


@pytest.mark.parametrize('path', TABLES, ids=['demo', 'outside'])
def test_demo_doc_table_is_metrics_json(path):
    """docs/demo.md shows exactly the numbers of each metrics file (regenerated together, see the module
    docstring)."""
    metrics = json.loads(path.read_text())
    if UPDATE:
        pytest.skip('DEMO_METRICS_UPDATE=1: test_demo_model_metrics rewrites the table')
    text = DEMO_DOC.read_text()
    begin, end = TABLES[path]
    assert text[text.index(begin) + len(begin):text.index(end)].strip() == demo_table(metrics)


@pytest.mark.parametrize('path', TABLES, ids=['demo', 'outside'])
def test_demo_model_metrics(tmp_path, path):
    """The commands recorded in a metrics file give its numbers, the model's and the input composites' (within the
    recorded tolerance: other CPUs may round differently in the last bits), and its verdict: whether the model
    brings the foreground closer to the real images than the composites are (fMSE over all images)."""
    expected = json.loads(path.read_text())
    data = tmp_path / 'data'
    res = run(command_args(expected['dataset_command'], out=str(data)))
    assert res.returncode == 0, res.stderr
    results = tmp_path / 'results'
    res = run(command_args(expected['command'], dataset_root=str(data), results_dir=str(results)))
    assert res.returncode == 0, res.stderr[-3000:]
    summary = read_summary(results)
    got = {'demo model': summary['groups'], 'input composites': summary['composite_groups']}
    improves = got['demo model']['all']['fmse'] < got['input composites']['all']['fmse']
    if UPDATE:
        expected['runs'] = {label: _rounded(got[label]) for label in RUNS}
        expected['protocol'] = summary['protocol']['description'].removeprefix('protocol: ')
        expected['date'] = datetime.date.today().isoformat()
        expected['model_improves_fmse'] = improves
        path.write_text(json.dumps(expected, indent=2) + '\n')
        write_doc_table(expected, path)
        return
    assert improves == expected['model_improves_fmse']
    tol = expected['tolerance']
    for label in RUNS:
        groups = got[label]
        for group, stated in expected['runs'][label].items():
            assert groups[group]['n'] == stated['n'], (label, group)
            for key in COLUMNS[1:]:
                if stated[key] is None:
                    assert groups[group][key] is None, (label, group, key)
                else:
                    assert groups[group][key] == pytest.approx(stated[key], rel=tol['rel'], abs=tol['abs']), \
                        (label, group, key)


# ----------------------------------------------------------------------------- the demo model's training script
def test_train_demo_model_script_at_toy_size(tiny_dataset, tmp_path):
    """scripts/train_demo_model.sh at toy size: the fast recipe (per-image normalization, batch 16, the linear
    learning-rate rule with a warm-up of 10% of the steps), and a record of the command and the sample count."""
    out = tmp_path / 'ck'
    res = run(['bash', 'scripts/train_demo_model.sh'], DEMO_DATA=str(tiny_dataset), DEMO_CHECKPOINTS=str(out),
              DEMO_NITER='1', DEMO_NITER_DECAY='1')
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    demo = out / 'demo'
    names = {p.name for p in demo.iterdir()}
    assert {'TRAINING.md', 'latest_net_E.pth', 'latest_net_G.pth', 'loss_log.txt', 'train_opt.txt'} <= names
    assert not [n for n in names if n.endswith('_train_state.pth')]  # the shipped folder keeps the weights only
    _, _, arch = models.load_bargainnet(str(demo))
    assert (arch.ngf, arch.ndf, arch.style_dim) == (16, 16, 16)
    assert models.factory.model_defaults(str(demo), {}).get('eval') is False  # tested with each image's statistics
    record = (demo / 'TRAINING.md').read_text()
    n = len((tiny_dataset / 'IHD_train.txt').read_text().split())
    steps = 2 * -(-n // 16)
    assert (f'--batch_size 16 --per_image_norm --lr 1.6e-3 --lr_warmup {(steps + 5) // 10} --beta1 0.9 --niter 1 '
            f'--niter_decay 1 ') in record
    assert f'2 epochs x {n} composites = {2 * n} training samples' in record
    assert f'({steps} iterations of batch 16' in record


# ----------------------------------------------------------------------------- compare_results.py
def test_paired_comparison_by_hand(tmp_path):
    compare = load_script('compare_results')
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


# ----------------------------------------------------------------------------- make demo
def test_demo_pipeline_at_toy_size(tmp_path):
    """scripts/demo.sh end to end at toy size: a dataset, a trained quick model, three evaluations on the same
    test images whose means are printed, and the examples harmonized at their own size with scores."""
    results = tmp_path / 'res'
    res = run(['bash', 'scripts/demo.sh'], DEMO_DATA=str(tmp_path / 'data'), DEMO_RESULTS=str(results),
              DEMO_PER_PHOTO='2', DEMO_ITERS='10', DEMO_NGF='8', DEMO_NUM_TEST='4')
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert 'error:' not in res.stderr
    # the quick model trained: weights and loss lines
    quick = [p.parent for p in results.rglob('latest_net_G.pth')]
    assert len(quick) == 1 and (quick[0] / 'latest_net_E.pth').is_file()
    assert re.search(r'^\(epoch: \d+, iters: \d+', (quick[0] / 'loss_log.txt').read_text(), re.M)
    # three evaluations (composites, quick model, demo model) of the same 4 test images, their means printed
    summaries = [json.loads(p.read_text()) for p in results.rglob('summary.json')]
    assert len(summaries) == 3
    assert [s['groups']['all']['n'] for s in summaries] == [4, 4, 4]
    for s in summaries:
        assert f'{s["groups"]["all"]["mse"]:.2f}' in res.stdout
    images = [sorted(row['image'] for row in csv.DictReader(p.open())) for p in results.rglob('metrics.csv')]
    assert len(images) == 3 and images[0] == images[1] == images[2]
    # examples harmonized at full resolution, each with its harmony scores before and after
    examples = sorted((ROOT / 'examples' / 'composite').iterdir())
    for src in examples:
        out = [p for p in results.rglob(f'{src.stem}.*') if 'examples' in p.parts]
        assert len(out) == 1 and Image.open(out[0]).size == Image.open(src).size, out
    assert len(re.findall(r'\b0\.\d+ before and [01]\.\d+ after', res.stdout)) == len(examples)
