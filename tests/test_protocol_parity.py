"""test.py against a plain reimplementation of the released per-image test loop (tests/released_protocol.py).

Same generated weights, same generated images (non-square 320×272 photos resized by OpenCV, and 256×256 ones
that pass unchanged), with ``--eval`` and with each image's own BatchNorm statistics (``--no_eval``, the
released command; both sides without dropout, whose released masks are random). At batch size 1 the
harmonized images are byte-identical and every metric equal; at batch size 4 convolutions sum in another
order, which may flip a truncated level on a few pixels.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import released_protocol as rp
import test as test_script
from conftest import write_tiny_iharmony4
from models.checkpoint import atomic_save, plain_state_dict
from models.factory import Architecture, create_networks
from conftest import load_script

METRICS = ('mse', 'fmse', 'psnr')
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, torch.nn.Module]:
    """G and E of ngf 8 / ndf 8 without dropout, saved as ``<dir>/parity/latest_net_{G,E}.pth``.

    BatchNorm parameters and running statistics are drawn at random, so that ``--eval`` and per-image
    statistics give clearly different outputs, and the outputs are not a flat grey.
    """
    torch.manual_seed(0)
    netG, netE = create_networks(Architecture(ngf=8, ndf=8, use_dropout=False))
    for net in (netG, netE):
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.data.normal_(1.0, 0.5)
                m.bias.data.normal_(0.0, 0.3)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    root = tmp_path_factory.mktemp('weights')
    atomic_save(plain_state_dict(netG), str(root / 'parity' / 'latest_net_G.pth'))
    atomic_save(plain_state_dict(netE), str(root / 'parity' / 'latest_net_E.pth'))
    return root, netG.eval(), netE.eval()


@pytest.fixture(scope='module')
def square_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_iharmony4(tmp_path_factory.mktemp('ihd256'), size=(256, 256), seed=3)


@pytest.fixture(params=['non-square', '256'])
def dataset(request, tiny_dataset, square_dataset) -> Path:
    return tiny_dataset if request.param == 'non-square' else square_dataset


def run_test_py(dataset: Path, checkpoints: Path, results: Path, *extra: str) -> Path:
    """test.py's main() in this process; returns its results folder."""
    argv = ['--name', 'parity', '--dataset_root', str(dataset), '--checkpoints_dir', str(checkpoints),
            '--results_dir', str(results), '--gpu_ids', '-1', '--num_threads', '0', '--num_html', '1',
            '--psnr_peak', 'dynamic', *extra]
    assert test_script.main(argv) == 0
    folders = [p.parent for p in results.glob('parity/*/summary.json')]
    assert len(folders) == 1
    return folders[0]


def read_rows(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / 'metrics.csv', newline='') as f:
        return {row['image']: row for row in csv.DictReader(f)}


def compare(reference: list[dict], folder: Path, rel: float) -> tuple[int, int, float]:
    """Check every reference image and metric against test.py's; returns (differing pixels, pixels, largest
    relative metric difference)."""
    rows = read_rows(folder)
    assert list(rows) == [r['image'] for r in reference]  # every image, in list order
    differing, total, worst = 0, 0, 0.0
    for ref in reference:
        ours = np.asarray(Image.open(folder / 'images' / f'{ref["image"]}.png'))
        assert ours.shape == ref['output'].shape and ours.dtype == np.uint8
        diff = np.abs(ours.astype(int) - ref['output'].astype(int))
        assert diff.max() <= 1, ref['image']
        differing += int((diff > 0).sum())
        total += diff.size
        for key in METRICS:
            got, want = float(rows[ref['image']][key]), ref[key]
            assert got == pytest.approx(want, rel=rel), (ref['image'], key)
            worst = max(worst, abs(got - want) / abs(want))
    return differing, total, worst


@pytest.mark.parametrize('mode', ['--eval', '--no_eval'])
def test_batch_size_1_is_the_released_loop_exactly(dataset, weights, tmp_path, mode):
    checkpoints, netG, netE = weights
    reference = rp.released_evaluate(dataset, netG, netE, per_image=mode == '--no_eval')
    folder = run_test_py(dataset, checkpoints, tmp_path, '--batch_size', '1', '--no_dropout', mode)
    assert folder.name == 'latest_test'
    differing, _, worst = compare(reference, folder, rel=1e-6)
    assert differing == 0  # byte-identical images
    assert worst < 1e-9
    summary = json.loads((folder / 'summary.json').read_text())
    assert summary['protocol']['name'] == 'released'
    assert summary['groups']['all']['mse'] == pytest.approx(np.mean([r['mse'] for r in reference]), rel=1e-12)
    # the two modes are different computations: the comparison above could fail
    other = rp.released_evaluate(dataset, netG, netE, per_image=mode != '--no_eval', max_images=1)[0]
    assert not np.array_equal(other['output'], reference[0]['output'])


@pytest.mark.parametrize('mode', ['--eval', '--no_eval'])
def test_batch_size_4_is_the_released_loop_up_to_rounding(dataset, weights, tmp_path, mode):
    checkpoints, netG, netE = weights
    reference = rp.released_evaluate(dataset, netG, netE, per_image=mode == '--no_eval')
    folder = run_test_py(dataset, checkpoints, tmp_path, '--batch_size', '4', '--no_dropout', mode)
    differing, total, _ = compare(reference, folder, rel=1e-4)
    assert differing <= 0.001 * total


def test_composite_baseline_is_the_released_composite_scores(dataset, tmp_path):
    reference = rp.released_evaluate(dataset, None, None, per_image=False)
    folder = run_test_py(dataset, tmp_path / 'no_weights', tmp_path / 'res', '--baseline', 'composite',
                         '--batch_size', '3')
    assert folder.name == 'composite_test'
    differing, _, worst = compare(reference, folder, rel=1e-6)
    assert differing == 0 and worst < 1e-9
    assert not (tmp_path / 'no_weights').exists()  # no stray checkpoints/<name>/ folder


def test_the_truncated_real_image_matters(tiny_dataset, tmp_path):
    """The released protocol scores against the truncated real image, the deploy protocol against the loaded
    pixels: on the composites alone the two give different numbers, and only the first is the released one."""
    reference = rp.released_evaluate(tiny_dataset, None, None, per_image=False, max_images=4)
    folder = run_test_py(tiny_dataset, tmp_path / 'none', tmp_path / 'res', '--baseline', 'composite',
                         '--protocol', 'deploy', '--num_test', '4')
    assert folder.name == 'composite_test_deploy'
    rows = read_rows(folder)
    assert all(float(rows[r['image']]['mse']) != pytest.approx(r['mse'], rel=1e-6) for r in reference)
    summary = json.loads((folder / 'summary.json').read_text())
    assert summary['protocol']['name'] == 'deploy' and 'loaded pixels' in summary['protocol']['description']


def test_the_benchmarks_released_loop_is_the_reference(tiny_dataset, weights, tmp_path):
    """scripts/benchmark_test.py times its own copy of the released loop: it computes the reference's images."""
    bench = load_script('benchmark_test')
    _, netG, netE = weights
    assert bench.released_loop(tiny_dataset, netG, netE, torch.device('cpu'), 3, tmp_path) > 0
    for ref in rp.released_evaluate(tiny_dataset, netG, netE, per_image=True, max_images=3):
        assert np.array_equal(np.asarray(Image.open(tmp_path / f'{ref["image"]}.png')), ref['output'])
