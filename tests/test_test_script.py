"""test.py end to end on a generated dataset: protocol, outputs, batch-size invariance, baseline, errors."""
from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import test as test_script
from data import create_dataset
from models import checkpoint, create_model, networks
from models.checkpoint import atomic_save, plain_state_dict
from options.test_options import TestOptions
from util.cli import run_main
from util.image import input_to_uint8

SUBSET_COUNTS = {'HCOCO': 2, 'HAdobe5k': 2, 'HFlickr': 2, 'Hday2night': 2}


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained ngf 8 / ndf 8 weights saved as ``<dir>/tiny/latest_net_{G,E}.pth`` (the released format)."""
    root = tmp_path_factory.mktemp('ckpt')
    torch.manual_seed(0)
    netG = networks.define_G(20, 3, 8, 's2ad', 'batch', True, 16)
    netE = networks.define_E(16, 8, 'batch')
    atomic_save(plain_state_dict(netG), str(root / 'tiny' / 'latest_net_G.pth'))
    atomic_save(plain_state_dict(netE), str(root / 'tiny' / 'latest_net_E.pth'))
    return root


def argv(dataset: Path, ckpt: Path, results: Path, *extra: str) -> list[str]:
    # the SPEC §1 test command, on the CPU, with our folders
    return ['--name', 'tiny', '--model', 'bargainnet', '--dataset_mode', 'iharmony4', '--is_train', '0',
            '--norm', 'batch', '--preprocess', 'resize', '--gpu_ids', '-1', '--input_nc', '20', '--netG', 's2ad',
            '--dataset_root', str(dataset), '--checkpoints_dir', str(ckpt), '--results_dir', str(results),
            '--num_threads', '0', '--num_html', '2', *extra]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The printed Markdown table as {row name: cells}."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if line.startswith('|') and cells[0] not in ('images', '---'):
            rows[cells[0]] = cells[1:]
    return rows


def nearest_mask(path: Path, size: int = 256) -> np.ndarray:
    """The mask resized nearest-neighbour with OpenCV's INTER_NEAREST rule: source = floor(dest · in / out)."""
    m = np.asarray(Image.open(path)) == 255
    h, w = m.shape
    ys = np.floor(np.arange(size) * (h / size)).astype(int)
    xs = np.floor(np.arange(size) * (w / size)).astype(int)
    return m[ys][:, xs]


def test_protocol_outputs_and_hand_computed_metrics(tiny_dataset, checkpoints, tmp_path, capsys):
    assert test_script.main(argv(tiny_dataset, checkpoints, tmp_path, '--batch_size', '3')) == 0
    captured = capsys.readouterr()  # the table on stdout, the log (set up by main) on stderr
    out_dir = tmp_path / 'tiny' / 'latest_test'
    rows = read_csv(out_dir / 'metrics.csv')
    assert list(rows[0]) == ['image', 'subset', 'fg_ratio', 'mse', 'psnr', 'fmse', 'fpsnr', 'ssim']
    listed = (tiny_dataset / 'IHD_test.txt').read_text().split()
    assert [r['image'] for r in rows] == [Path(p).stem for p in listed]  # every image, in list order

    # files where documented
    for r in rows:
        png = Image.open(out_dir / 'images' / f'{r["image"]}.png')
        assert png.format == 'PNG' and png.size == (256, 256) and png.mode == 'RGB'
    assert sorted(p.name for p in (out_dir / 'images').iterdir()) == sorted(f'{r["image"]}.png' for r in rows)
    html = (out_dir / 'index.html').read_text()
    for kind in ('composite', 'real', 'mask'):
        assert len(list((out_dir / 'page').glob(f'*_{kind}.png'))) == 4  # 2 largest + 2 smallest gains
    assert html.count('<img') == 16 and 'images/' in html and 'largest gains' in html
    assert (checkpoints / 'tiny' / 'test_opt.txt').is_file()
    summary = json.loads((out_dir / 'summary.json').read_text())
    assert summary['settings']['num_images'] == 8 and summary['settings']['psnr_peak'] == '255'
    assert summary['settings']['ngf'] == 8 and summary['settings']['ndf'] == 8
    assert 'architecture read from the checkpoint (not given on the command line): ngf 8, ndf 8, style_dim 16' \
        in captured.err

    # each metric by hand from the saved PNG, the dataset's real image and the nearest-resized mask
    opt = TestOptions().parse(argv(tiny_dataset, checkpoints, tmp_path))
    dataset = create_dataset(opt, 'test')
    gains = {}
    for i, r in enumerate(rows):
        item = dataset[i]
        out = np.asarray(Image.open(out_dir / 'images' / f'{r["image"]}.png')).astype(np.float64)
        real = input_to_uint8(item['real']).astype(np.float64)
        comp = input_to_uint8(item['comp']).astype(np.float64)
        gains[r['image']] = ((comp - real) ** 2).mean() - ((out - real) ** 2).mean()
        mask = nearest_mask(tiny_dataset / r['subset'] / 'masks' / ('_'.join(r['image'].split('_')[:-1]) + '.png'))
        assert np.array_equal(mask, item['mask_metric'][0].numpy() > 0.5)
        err = (out - real) ** 2
        mse = err.mean()
        fmse = err[mask].sum() / (3 * mask.sum())
        assert float(r['mse']) == pytest.approx(mse, rel=1e-12)
        assert float(r['fmse']) == pytest.approx(fmse, rel=1e-12)
        assert float(r['psnr']) == pytest.approx(10 * math.log10(255 ** 2 / mse), rel=1e-12)
        assert float(r['fpsnr']) == pytest.approx(10 * math.log10(255 ** 2 / fmse), rel=1e-12)
        assert float(r['fg_ratio']) == pytest.approx(mask.mean(), rel=1e-12)
        assert 0 < float(r['ssim']) < 1
        assert r['subset'] == item['subset']

    # index.html: the two largest gains first, then the two smallest (most negative first)
    ranked = sorted(gains, key=gains.get, reverse=True)
    shown = re.findall(r'src="images/([^"]+)\.png"', html)
    assert shown == ranked[:2] + ranked[::-1][:2]

    # the table: overall, each sub-dataset and each foreground band, with image counts
    table = table_rows(captured.out)
    assert table['all'][0] == '8'
    for subset, n in SUBSET_COUNTS.items():
        assert table[subset][0] == str(n)
    bands = {'fg 0-5%': 0, 'fg 5-15%': 0, 'fg 15-100%': 0}
    for r in rows:
        ratio = float(r['fg_ratio'])
        bands['fg 0-5%' if ratio < 0.05 else 'fg 5-15%' if ratio < 0.15 else 'fg 15-100%'] += 1
    for band, n in bands.items():
        assert table[band][0] == str(n)
    assert table['all'][1] == f'{np.mean([float(r["mse"]) for r in rows]):.2f}'
    assert table['HCOCO'][3] == f'{np.mean([float(r["fmse"]) for r in rows if r["subset"] == "HCOCO"]):.2f}'


def test_batch_sizes_give_identical_results(tiny_dataset, checkpoints, tmp_path):
    a, b = tmp_path / 'a', tmp_path / 'b'
    assert test_script.main(argv(tiny_dataset, checkpoints, a, '--batch_size', '1')) == 0
    assert test_script.main(argv(tiny_dataset, checkpoints, b, '--batch_size', '4', '--num_threads', '2')) == 0
    da, db = a / 'tiny' / 'latest_test', b / 'tiny' / 'latest_test'
    assert (da / 'metrics.csv').read_bytes() == (db / 'metrics.csv').read_bytes()
    for png in (da / 'images').iterdir():
        assert np.array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(db / 'images' / png.name)))


def test_prepacked_weights_change_no_result(tiny_dataset, checkpoints, tmp_path):
    a, b = tmp_path / 'a', tmp_path / 'b'
    assert test_script.main(argv(tiny_dataset, checkpoints, a, '--batch_size', '2')) == 0
    assert test_script.main(argv(tiny_dataset, checkpoints, b, '--batch_size', '2', '--no_prepack')) == 0
    da, db = a / 'tiny' / 'latest_test', b / 'tiny' / 'latest_test'
    assert (da / 'metrics.csv').read_bytes() == (db / 'metrics.csv').read_bytes()
    for png in (da / 'images').iterdir():
        assert png.read_bytes() == (db / 'images' / png.name).read_bytes()


def test_batched_forward_stays_within_one_level(tiny_dataset, checkpoints, tmp_path):
    a, b = tmp_path / 'a', tmp_path / 'b'
    assert test_script.main(argv(tiny_dataset, checkpoints, a, '--batch_size', '1')) == 0
    assert test_script.main(argv(tiny_dataset, checkpoints, b, '--batch_size', '4', '--batched_forward')) == 0
    da, db = a / 'tiny' / 'latest_test', b / 'tiny' / 'latest_test'
    for png in (da / 'images').iterdir():
        x = np.asarray(Image.open(png)).astype(int)
        y = np.asarray(Image.open(db / 'images' / png.name)).astype(int)
        assert np.abs(x - y).max() <= 1 and (x != y).mean() < 0.01  # truncation flips, nothing else
    for ra, rb in zip(read_csv(da / 'metrics.csv'), read_csv(db / 'metrics.csv')):
        assert ra['image'] == rb['image'] and float(ra['mse']) == pytest.approx(float(rb['mse']), abs=0.05)


def test_dynamic_peak_and_num_test(tiny_dataset, checkpoints, tmp_path):
    assert test_script.main(argv(tiny_dataset, checkpoints, tmp_path, '--psnr_peak', 'dynamic',
                                 '--num_test', '3', '--batch_size', '2')) == 0
    out_dir = tmp_path / 'tiny' / 'latest_test'
    rows = read_csv(out_dir / 'metrics.csv')
    assert len(rows) == 3
    for r in rows:
        out = np.asarray(Image.open(out_dir / 'images' / f'{r["image"]}.png'))
        peak = float(out.max()) - float(out.min())
        assert float(r['psnr']) == pytest.approx(10 * math.log10(peak ** 2 / float(r['mse'])), rel=1e-12)
        assert float(r['fpsnr']) == pytest.approx(10 * math.log10(peak ** 2 / float(r['fmse'])), rel=1e-12)
    assert json.loads((out_dir / 'summary.json').read_text())['settings']['psnr_peak'] == 'dynamic'


def test_baseline_composite_needs_no_weights_and_is_zero_when_composite_is_real(tiny_dataset, tmp_path, capsys):
    data_root = tmp_path / 'ihd'
    shutil.copytree(tiny_dataset, data_root)
    first = (data_root / 'IHD_test.txt').read_text().split()[0]  # HCOCO/composite_images/<real>_<m>_<k>.jpg
    real_name = first.split('/')[-1].rsplit('_', 2)[0] + '.jpg'
    shutil.copyfile(data_root / 'HCOCO' / 'real_images' / real_name, data_root / first)
    empty_ckpt = tmp_path / 'no_weights'
    assert test_script.main(argv(data_root, empty_ckpt, tmp_path / 'res', '--baseline', 'composite')) == 0
    out_dir = tmp_path / 'res' / 'tiny' / 'composite_test'
    rows = read_csv(out_dir / 'metrics.csv')
    assert float(rows[0]['mse']) == 0.0 and float(rows[0]['fmse']) == 0.0 and float(rows[0]['ssim']) == 1.0
    assert float(rows[0]['psnr']) == pytest.approx(10 * math.log10(255 ** 2 / 1e-10))  # finite, documented
    # the other rows: the composites themselves against the real images
    opt = TestOptions().parse(argv(data_root, empty_ckpt, tmp_path))
    item = create_dataset(opt, 'test')[1]
    comp, real = (input_to_uint8(item[k]).astype(np.float64) for k in ('comp', 'real'))
    assert float(rows[1]['mse']) == pytest.approx(((comp - real) ** 2).mean(), rel=1e-12)
    assert np.array_equal(np.asarray(Image.open(out_dir / 'images' / f'{rows[1]["image"]}.png')), comp)
    assert 'baseline' in capsys.readouterr().out
    assert not list(empty_ckpt.glob('*/*.pth'))


def test_empty_foreground_is_nan_excluded_and_warned(tiny_dataset, checkpoints, tmp_path, capsys):
    data_root = tmp_path / 'ihd'
    shutil.copytree(tiny_dataset, data_root)
    first = (data_root / 'IHD_test.txt').read_text().split()[0]
    mask_path = data_root / 'HCOCO' / 'masks' / (first.split('/')[-1].rsplit('_', 1)[0] + '.png')
    mask = np.zeros_like(np.asarray(Image.open(mask_path)))
    # one foreground pixel that nearest-neighbour resizing (272×320 → 256×256) skips: rows 16, columns 4
    mask[16, 4] = 255
    Image.fromarray(mask).save(mask_path)
    assert test_script.main(argv(data_root, checkpoints, tmp_path / 'res', '--num_test', '3')) == 0
    out_dir = tmp_path / 'res' / 'tiny' / 'latest_test'
    text = (out_dir / 'metrics.csv').read_text()
    rows = read_csv(out_dir / 'metrics.csv')
    assert rows[0]['fmse'] == 'nan' and rows[0]['fpsnr'] == 'nan' and float(rows[0]['fg_ratio']) == 0.0
    assert 'inf' not in text
    summary = json.loads((out_dir / 'summary.json').read_text())
    assert summary['settings']['num_empty_foreground'] == 1
    g = summary['groups']['all']
    assert g['n'] == 3 and g['n_fg'] == 2
    assert g['fmse'] == pytest.approx(np.mean([float(r['fmse']) for r in rows[1:]]))
    assert all(v is None or math.isfinite(v) for grp in summary['groups'].values() for v in grp.values())
    assert 'WARNING: 1 image(s) have an empty foreground' in capsys.readouterr().err


def test_invert_mask_feeds_the_inverted_mask(tiny_dataset, checkpoints, tmp_path):
    extra = ('--invert_mask', '--num_test', '2', '--ngf', '8', '--ndf', '8')
    assert test_script.main(argv(tiny_dataset, checkpoints, tmp_path, *extra)) == 0
    out_dir = tmp_path / 'tiny' / 'latest_test_invert_mask'
    opt = TestOptions().parse(argv(tiny_dataset, checkpoints, tmp_path, *extra))
    model = create_model(opt)
    model.setup()
    dataset = create_dataset(opt, 'test')
    for i in range(2):
        item = dataset[i]
        comp, mask = item['comp'][None], item['mask'][None]
        harm, _ = model.harmonize(comp, 1 - mask, [(opt.seed << 32) + i])
        expected = ((harm.clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
        saved = np.asarray(Image.open(out_dir / 'images' / f'{Path(item["comp_path"]).stem}.png'))
        assert np.array_equal(saved, expected)


def test_missing_weights_and_mismatching_architecture_are_clear_errors(tiny_dataset, checkpoints, tmp_path, capsys):
    assert run_main(test_script.main, argv(tiny_dataset, tmp_path / 'none', tmp_path, '--epoch', '7')) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: weights not found:') and '7_net_G.pth' in err and '7_net_E.pth' in err
    assert '--name tiny' in err and f'--checkpoints_dir {tmp_path / "none"}' in err and '--epoch 7' in err
    assert run_main(test_script.main, argv(tiny_dataset, checkpoints, tmp_path, '--ngf', '16')) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith('error: ') and 'latest_net_G.pth' in last and 'mis-shaped' in last


def test_weights_torn_between_two_saves_are_refused(tiny_dataset, checkpoints, tmp_path, capsys):
    ckpt = tmp_path / 'ckpt'
    shutil.copytree(checkpoints, ckpt)
    folder = ckpt / 'tiny'
    digests = {n: {'file': f'latest_net_{n}.pth', 'sha256': checkpoint.file_sha256(str(folder / f'latest_net_{n}.pth'))}
               for n in ('G', 'E')}
    # train.py stopped after renaming the new G over the old one: the committed state describes the old set
    old = {n: {**d, 'sha256': '0' * 64} if n == 'G' else d for n, d in digests.items()}
    new = {n: {**d, 'sha256': '1' * 64} if n == 'E' else d for n, d in digests.items()}
    torch.save({'model': {}, 'networks': old}, folder / 'latest_train_state.pth')
    torch.save({'model': {}, 'networks': new}, folder / '.latest_train_state.pth.pending')
    assert run_main(test_script.main, argv(tiny_dataset, ckpt, tmp_path / 'res')) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f'error: {folder}: latest_net_G.pth, latest_net_E.pth come from two different saves')
    assert not (tmp_path / 'res').exists()
    # the save finished (the state matches): evaluated as usual
    torch.save({'model': {}, 'networks': digests}, folder / '.latest_train_state.pth.pending')
    assert test_script.main(argv(tiny_dataset, ckpt, tmp_path / 'res', '--num_test', '1')) == 0


def test_original_size_evaluation_scores_the_unpadded_image(tiny_dataset, checkpoints, tmp_path):
    extra = ('--preprocess', 'none', '--batch_size', '1', '--num_test', '1')
    assert test_script.main(argv(tiny_dataset, checkpoints, tmp_path, *extra)) == 0
    out_dir = tmp_path / 'tiny' / 'latest_test'
    row = read_csv(out_dir / 'metrics.csv')[0]
    out = np.asarray(Image.open(out_dir / 'images' / f'{row["image"]}.png')).astype(np.float64)
    listed = (tiny_dataset / 'IHD_test.txt').read_text().split()[0]
    real_name = listed.split('/')[-1].rsplit('_', 2)[0] + '.jpg'
    real = np.asarray(Image.open(tiny_dataset / 'HCOCO' / 'real_images' / real_name)).astype(np.float64)
    assert out.shape == real.shape == (272, 320, 3)  # the padding to 512×512 is cut off again
    assert float(row['mse']) == pytest.approx(((out - real) ** 2).mean(), rel=1e-12)


def test_unique_stems_and_training_preprocess_are_checked(tiny_dataset, checkpoints, tmp_path, capsys):
    rows = [{'image': 'a_1_1', 'comp_path': '/x/HCOCO/composite_images/a_1_1.jpg'},
            {'image': 'a_1_1', 'comp_path': '/x/HCOCO/composite_images/a_1_1.jpg'}]  # a listed-twice line is fine
    test_script.check_unique_stems(rows)
    rows.append({'image': 'a_1_1', 'comp_path': '/x/HFlickr/composite_images/a_1_1.jpg'})
    with pytest.raises(ValueError, match='share the file stem'):
        test_script.check_unique_stems(rows)
    extra = ('--preprocess', 'resize_and_crop')
    assert run_main(test_script.main, argv(tiny_dataset, checkpoints, tmp_path, *extra)) == 2
    assert 'error: --preprocess resize_and_crop is a training augmentation' in capsys.readouterr().err
