"""test.py end to end on a generated dataset: outputs, metrics by hand, protocols, baseline, variants, errors."""
from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import test as test_script
from data import create_dataset
from models import harmonize, load_bargainnet
from models.checkpoint import atomic_save, plain_state_dict
from models.factory import Architecture, create_networks
from options.test_options import TestOptions
from util.cli import run_main
from util.image import to_unit_range

SUBSET_COUNTS = {'HCOCO': 2, 'HAdobe5k': 2, 'HFlickr': 2, 'Hday2night': 2}


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained ngf 8 / ndf 8 weights saved as ``<dir>/tiny/latest_net_{G,E}.pth`` (the released format)."""
    root = tmp_path_factory.mktemp('ckpt')
    torch.manual_seed(0)
    netG, netE = create_networks(Architecture(ngf=8, ndf=8))
    atomic_save(plain_state_dict(netG), str(root / 'tiny' / 'latest_net_G.pth'))
    atomic_save(plain_state_dict(netE), str(root / 'tiny' / 'latest_net_E.pth'))
    return root


def argv(dataset: Path, ckpt: Path, results: Path, *extra: str) -> list[str]:
    # the released test command, on the CPU, with our folders
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


def truncated(t: torch.Tensor) -> np.ndarray:
    """The released tensor2im of a 3×H×W tensor (a uint8 item scaled as the model scales it), in numpy as the
    released code wrote it."""
    t = to_unit_range(t) if t.dtype == torch.uint8 else t
    return ((t.numpy().transpose(1, 2, 0) + 1) / 2.0 * 255.0).astype(np.uint8)


def loaded(t: torch.Tensor) -> np.ndarray:
    """The loaded pixels of a uint8 3×H×W item."""
    assert t.dtype == torch.uint8
    return t.numpy().transpose(1, 2, 0)


def net_inputs(item: dict, *keys: str) -> list[torch.Tensor]:
    """Batches of one of an item's images and mask, as the model takes them (floats in [-1, 1] and {0, 1})."""
    return [item[k][None].float() if k == 'mask' else to_unit_range(item[k][None]) for k in keys]


def test_outputs_and_metrics_by_hand(tiny_dataset, checkpoints, tmp_path, capsys):
    assert test_script.main(argv(tiny_dataset, checkpoints, tmp_path, '--batch_size', '3')) == 0
    captured = capsys.readouterr()  # the table on stdout, the log (set up by main) on stderr
    out_dir = tmp_path / 'tiny' / 'latest_test'
    rows = read_csv(out_dir / 'metrics.csv')
    assert list(rows[0]) == ['image', 'subset', 'fg_ratio', 'mse', 'psnr', 'fmse', 'fpsnr', 'ssim', 'comp_mse',
                             'comp_psnr', 'comp_fmse', 'comp_fpsnr', 'comp_ssim']
    listed = (tiny_dataset / 'IHD_test.txt').read_text().split()
    assert [r['image'] for r in rows] == [Path(p).stem for p in listed]  # every image, in list order
    assert sorted(p.name for p in (out_dir / 'images').iterdir()) == sorted(f'{r["image"]}.png' for r in rows)

    # the options go to the results folder, none to the model's folder
    assert 'name: tiny' in (out_dir / 'test_opt.txt').read_text()
    assert sorted(p.name for p in (checkpoints / 'tiny').iterdir()) == ['latest_net_E.pth', 'latest_net_G.pth']
    summary = json.loads((out_dir / 'summary.json').read_text())
    assert summary['protocol']['name'] == 'released'
    assert summary['protocol']['description'] in captured.out.splitlines()[0]
    assert summary['settings']['num_images'] == 8 and summary['settings']['psnr_peak'] == '255'
    assert summary['settings']['ngf'] == 8 and summary['settings']['ndf'] == 8
    assert 'settings of the model in' in captured.err and 'ngf 8' in captured.err

    # each metric by hand: the saved PNG against the TRUNCATED real image, on the dataset's fMSE mask
    dataset = create_dataset(TestOptions().parse(argv(tiny_dataset, checkpoints, tmp_path)), 'test')
    for i, r in enumerate(rows):
        item = dataset[i]
        out = np.asarray(Image.open(out_dir / 'images' / f'{r["image"]}.png')).astype(np.float64)
        real, comp = truncated(item['real']).astype(np.float64), truncated(item['comp']).astype(np.float64)
        pixels = loaded(item['real']).astype(np.float64)
        assert np.array_equal(real, pixels - ((pixels >= 1) & (pixels <= 63)))  # the truncation lowers 1..63 by one
        mask = item['mask_metric'][0].numpy() > 0.5
        for prefix, image in (('', out), ('comp_', comp)):
            err = (image - real) ** 2
            mse, fmse = err.mean(), err[mask].sum() / (3 * mask.sum())
            assert float(r[prefix + 'mse']) == pytest.approx(mse, rel=1e-12)
            assert float(r[prefix + 'fmse']) == pytest.approx(fmse, rel=1e-12)
            assert float(r[prefix + 'psnr']) == pytest.approx(10 * math.log10(255 ** 2 / mse), rel=1e-12)
            assert float(r[prefix + 'fpsnr']) == pytest.approx(10 * math.log10(255 ** 2 / fmse), rel=1e-12)
            assert 0 < float(r[prefix + 'ssim']) <= 1
        assert float(r['fg_ratio']) == pytest.approx(mask.mean(), rel=1e-12)
        assert r['subset'] == item['subset']

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
    composite = summary['composite_groups']
    assert composite['all']['mse'] == pytest.approx(np.mean([float(r['comp_mse']) for r in rows]), rel=1e-12)
    assert f'input composites, same protocol: MSE {composite["all"]["mse"]:.2f}' in captured.out


def test_deploy_protocol_reads_the_code_from_the_composite(tiny_dataset, checkpoints, tmp_path, capsys):
    extra = ('--protocol', 'deploy', '--num_test', '3', '--batch_size', '1', '--psnr_peak', 'dynamic')
    assert test_script.main(argv(tiny_dataset, checkpoints, tmp_path, *extra)) == 0
    assert 'protocol: deploy' in capsys.readouterr().out
    out_dir = tmp_path / 'tiny' / 'latest_test_deploy'
    rows = read_csv(out_dir / 'metrics.csv')
    assert json.loads((out_dir / 'summary.json').read_text())['protocol']['name'] == 'deploy'
    netG, netE, _ = load_bargainnet(str(checkpoints / 'tiny'))
    dataset = create_dataset(TestOptions().parse(argv(tiny_dataset, checkpoints, tmp_path)), 'test')
    for i, r in enumerate(rows):
        item = dataset[i]
        comp, mask, real = net_inputs(item, 'comp', 'mask', 'real')
        harm, _ = harmonize(netG, netE, comp, mask, comp, per_image=True, seeds=[i])  # --seed 0: seed = index
        saved = np.asarray(Image.open(out_dir / 'images' / f'{r["image"]}.png'))
        assert np.array_equal(saved, truncated(harm[0]))
        with_real, _ = harmonize(netG, netE, comp, mask, real, per_image=True, seeds=[i])
        assert not np.array_equal(saved, truncated(with_real[0]))  # the code's source changes the output
        # the ground truth is the loaded real image; the dynamic peak is the output's range
        err = (saved.astype(np.float64) - loaded(item['real'])) ** 2
        peak = float(saved.max()) - float(saved.min())
        assert float(r['mse']) == pytest.approx(err.mean(), rel=1e-12)
        assert float(r['psnr']) == pytest.approx(10 * math.log10(peak ** 2 / err.mean()), rel=1e-12)


def test_settings_of_the_model_folder_are_used_and_recorded(tiny_dataset, checkpoints, tmp_path):
    ckpt = Path(shutil.copytree(checkpoints, tmp_path / 'ckpt'))
    (ckpt / 'tiny' / 'train_opt.txt').write_text('               batch_size: 4\n               no_dropout: True\n')
    assert test_script.main(argv(tiny_dataset, ckpt, tmp_path, '--num_test', '1')) == 0
    summary = json.loads((tmp_path / 'tiny' / 'latest_test' / 'summary.json').read_text())
    assert summary['settings']['eval'] is True and summary['settings']['no_dropout'] is True
    assert '(--eval)' in summary['protocol']['description']
    assert test_script.main(argv(tiny_dataset, ckpt, tmp_path, '--num_test', '1', '--no_eval')) == 0
    summary = json.loads((tmp_path / 'tiny' / 'latest_test' / 'summary.json').read_text())
    assert summary['settings']['eval'] is False and 'no dropout (--no_dropout)' in summary['protocol']['description']


def test_baseline_composite_needs_no_weights_and_is_zero_when_composite_is_real(tiny_dataset, tmp_path, capsys):
    data_root = Path(shutil.copytree(tiny_dataset, tmp_path / 'ihd'))
    first = (data_root / 'IHD_test.txt').read_text().split()[0]  # HCOCO/composite_images/<real>_<m>_<k>.jpg
    real_name = first.split('/')[-1].rsplit('_', 2)[0] + '.jpg'
    shutil.copyfile(data_root / 'HCOCO' / 'real_images' / real_name, data_root / first)
    empty_ckpt = tmp_path / 'no_weights'
    assert test_script.main(argv(data_root, empty_ckpt, tmp_path / 'res', '--baseline', 'composite',
                                 '--name', 'inputs')) == 0
    out_dir = tmp_path / 'res' / 'inputs' / 'composite_test'
    rows = read_csv(out_dir / 'metrics.csv')
    assert list(rows[0])[-1] == 'ssim'  # no composite columns: the composites are the outputs
    assert float(rows[0]['mse']) == 0.0 and float(rows[0]['fmse']) == 0.0 and float(rows[0]['ssim']) == 1.0
    assert float(rows[0]['psnr']) == pytest.approx(10 * math.log10(255 ** 2 / 1e-10))  # finite, documented
    # the other rows: the truncated composites against the truncated real images
    item = create_dataset(TestOptions().parse(argv(data_root, empty_ckpt, tmp_path, '--baseline', 'composite')),
                          'test')[1]
    comp, real = truncated(item['comp']), truncated(item['real'])
    assert float(rows[1]['mse']) == pytest.approx(((comp.astype(float) - real) ** 2).mean(), rel=1e-12)
    assert np.array_equal(np.asarray(Image.open(out_dir / 'images' / f'{rows[1]["image"]}.png')), comp)
    assert 'baseline' in capsys.readouterr().out
    assert not empty_ckpt.exists()  # no stray checkpoints/inputs/ folder
    assert (out_dir / 'test_opt.txt').is_file()


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


def test_empty_foreground_is_nan_excluded_and_warned(tiny_dataset, checkpoints, tmp_path, capsys):
    data_root = Path(shutil.copytree(tiny_dataset, tmp_path / 'ihd'))
    first = (data_root / 'IHD_test.txt').read_text().split()[0]
    mask_path = data_root / 'HCOCO' / 'masks' / (first.split('/')[-1].rsplit('_', 1)[0] + '.png')
    mask = np.zeros_like(np.asarray(Image.open(mask_path)))
    # one foreground pixel that PIL's nearest resize (272×320 → 256×256, pixel centres) skips: row 8, column 2
    mask[8, 2] = 255
    Image.fromarray(mask).save(mask_path)
    assert not np.asarray(Image.open(mask_path).convert('1').resize((256, 256))).any()
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
    for groups in (summary['groups'], summary['composite_groups']):
        assert all(v is None or math.isfinite(v) for grp in groups.values() for v in grp.values())
    assert 'WARNING: 1 image(s) have an empty foreground' in capsys.readouterr().err


def test_invert_mask_feeds_the_inverted_mask(tiny_dataset, checkpoints, tmp_path):
    extra = ('--invert_mask', '--num_test', '2')
    assert test_script.main(argv(tiny_dataset, checkpoints, tmp_path, *extra)) == 0
    out_dir = tmp_path / 'tiny' / 'latest_test_invert_mask'
    netG, netE, _ = load_bargainnet(str(checkpoints / 'tiny'))
    dataset = create_dataset(TestOptions().parse(argv(tiny_dataset, checkpoints, tmp_path)), 'test')
    for i in range(2):
        item = dataset[i]
        comp, real, mask = net_inputs(item, 'comp', 'real', 'mask')
        harm, _ = harmonize(netG, netE, comp, 1 - mask, real, per_image=True, seeds=[i])
        saved = np.asarray(Image.open(out_dir / 'images' / f'{Path(item["comp_path"]).stem}.png'))
        assert np.array_equal(saved, truncated(harm[0]))


def test_original_size_evaluation_scores_the_unpadded_image(tiny_dataset, checkpoints, tmp_path):
    extra = ('--preprocess', 'none', '--batch_size', '1', '--num_test', '1', '--num_html', '1')
    assert test_script.main(argv(tiny_dataset, checkpoints, tmp_path, *extra)) == 0
    out_dir = tmp_path / 'tiny' / 'latest_test'
    row = read_csv(out_dir / 'metrics.csv')[0]
    out = np.asarray(Image.open(out_dir / 'images' / f'{row["image"]}.png')).astype(np.float64)
    listed = (tiny_dataset / 'IHD_test.txt').read_text().split()[0]
    real_name = listed.split('/')[-1].rsplit('_', 2)[0] + '.jpg'
    real = cv2.cvtColor(cv2.imread(str(tiny_dataset / 'HCOCO' / 'real_images' / real_name)), cv2.COLOR_BGR2RGB)
    real = truncated(torch.from_numpy(real.transpose(2, 0, 1)).float() / 127.5 - 1)
    assert out.shape == real.shape == (272, 320, 3)  # the padding to 512×512 is cut off again
    assert float(row['mse']) == pytest.approx(((out - real) ** 2).mean(), rel=1e-12)
    thumbs = list((out_dir / 'page').glob('*.png'))
    assert thumbs and all(Image.open(p).size == (320, 272) for p in thumbs)


def test_missing_weights_and_mismatching_widths_are_one_line(tiny_dataset, checkpoints, tmp_path, capsys):
    assert run_main(test_script.main, argv(tiny_dataset, tmp_path / 'none', tmp_path, '--epoch', '7')) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: weights not found:') and '7_net_G.pth' in err and '7_net_E.pth' in err
    assert run_main(test_script.main, argv(tiny_dataset, checkpoints, tmp_path, '--ngf', '16')) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith('error: ') and 'latest_net_G.pth' in last and 'ngf 8' in last and 'ngf 16' in last
    assert not (tmp_path / 'tiny').exists()


@pytest.mark.parametrize('workers', ['0', '2'])
def test_a_truncated_image_is_one_line_from_a_worker_too(tiny_dataset, checkpoints, tmp_path, capsys, workers):
    data_root = Path(shutil.copytree(tiny_dataset, tmp_path / 'ihd'))
    third = data_root / (data_root / 'IHD_test.txt').read_text().split()[2]
    third.write_bytes(third.read_bytes()[:2000])
    code = run_main(test_script.main, argv(data_root, checkpoints, tmp_path / 'res', '--num_threads', workers,
                                           '--batch_size', '2'))
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f'error: {third}: cannot decode the image, it is truncated')
    assert not any('Traceback' in line or 'DataLoader worker' in line for line in err)


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
