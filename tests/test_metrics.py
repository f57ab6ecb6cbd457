"""Metrics and uint8 conversions against values computed by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from util import metrics
from util.image import crop_padding, input_to_uint8, mask_to_uint8, output_to_uint8, save_png


def _pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 2×2 image pair: one foreground pixel off by (3, 4, 0), one background pixel off by (0, 0, 6)."""
    real = np.full((1, 2, 2, 3), 100, dtype=np.uint8)
    real[0, 1, 1] = (10, 20, 30)
    out = real.copy()
    out[0, 0, 0] = (103, 96, 100)    # foreground: 9 + 16 + 0 = 25
    out[0, 1, 0] = (100, 100, 106)   # background: 36
    out[0, 1, 1] = (10, 20, 30)
    mask = np.zeros((1, 2, 2), dtype=bool)
    mask[0, 0, 0] = mask[0, 0, 1] = True  # two foreground pixels
    return out, real, mask


def test_mse_fmse_ratio_by_hand() -> None:
    out, real, mask = _pair()
    assert metrics.mse(out, real)[0] == pytest.approx((25 + 36) / 12)
    # only the foreground error, over 3 channels of the 2 foreground pixels
    assert metrics.foreground_mse(out, real, mask)[0] == pytest.approx(25 / 6)
    assert metrics.foreground_ratio(mask)[0] == pytest.approx(0.5)


def test_psnr_both_peaks_by_hand() -> None:
    out, real, mask = _pair()
    m = metrics.image_metrics(out, real, mask, '255', with_ssim=False)
    assert m['psnr'][0] == pytest.approx(10 * math.log10(255 ** 2 / (61 / 12)))
    assert m['fpsnr'][0] == pytest.approx(10 * math.log10(255 ** 2 / (25 / 6)))
    # dynamic: the output's own range, 106 - 10 = 96, for PSNR and fPSNR alike
    d = metrics.image_metrics(out, real, mask, 'dynamic', with_ssim=False)
    assert d['psnr'][0] == pytest.approx(10 * math.log10(96 ** 2 / (61 / 12)))
    assert d['fpsnr'][0] == pytest.approx(10 * math.log10(96 ** 2 / (25 / 6)))
    assert d['mse'][0] == m['mse'][0]


def test_perfect_image_is_finite_and_constant_output_dynamic_peak() -> None:
    real = np.full((1, 8, 8, 3), 77, dtype=np.uint8)
    mask = np.ones((1, 8, 8), dtype=bool)
    m = metrics.image_metrics(real.copy(), real, mask, '255')
    assert m['mse'][0] == 0 and m['fmse'][0] == 0
    assert m['psnr'][0] == pytest.approx(10 * math.log10(255 ** 2 / metrics.MSE_EPS))
    assert np.isfinite(m['psnr'][0]) and np.isfinite(m['fpsnr'][0])
    assert m['ssim'][0] == pytest.approx(1.0)
    # a constant output has range 0: the dynamic peak falls back to 1
    d = metrics.image_metrics(real.copy(), real, mask, 'dynamic')
    assert d['psnr'][0] == pytest.approx(10 * math.log10(1 / metrics.MSE_EPS))


def test_empty_foreground_is_nan_and_left_out_of_means() -> None:
    out, real, mask = _pair()
    out2 = np.concatenate([out, out])
    real2 = np.concatenate([real, real])
    mask2 = np.concatenate([mask, np.zeros_like(mask)])
    m = metrics.image_metrics(out2, real2, mask2, '255', with_ssim=False)
    assert math.isnan(m['fmse'][1]) and math.isnan(m['fpsnr'][1])
    assert not np.isnan(m['mse']).any() and not np.isinf(np.concatenate(list(m.values()))).any()
    rows = [{'subset': 'HCOCO', **{k: float(v[i]) for k, v in m.items()}} for i in range(2)]
    g = metrics.group_means(rows, ('mse', 'psnr', 'fmse', 'fpsnr'))
    assert g['n'] == 2 and g['n_fg'] == 1
    assert g['fmse'] == pytest.approx(25 / 6)
    assert g['mse'] == pytest.approx(61 / 12)


def test_ssim_of_constant_images_by_hand() -> None:
    # constant images: SSIM = (2ab + C1) / (a² + b² + C1), C1 = (0.01·255)²; the contrast term is C2/C2 = 1
    out = np.full((1, 16, 16, 3), 100, dtype=np.uint8)
    real = np.full((1, 16, 16, 3), 110, dtype=np.uint8)
    c1 = (0.01 * 255) ** 2
    assert metrics.ssim(out, real)[0] == pytest.approx((2 * 100 * 110 + c1) / (100 ** 2 + 110 ** 2 + c1))


def test_metrics_do_not_depend_on_batching() -> None:
    rng = np.random.default_rng(0)
    out = rng.integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    real = rng.integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    mask = rng.random((5, 32, 32)) < 0.3
    whole = metrics.image_metrics(out, real, mask, 'dynamic')
    for i in range(5):
        single = metrics.image_metrics(out[i:i + 1], real[i:i + 1], mask[i:i + 1], 'dynamic')
        for key, values in whole.items():
            assert single[key][0] == values[i], key


def test_bad_inputs_raise() -> None:
    out, real, mask = _pair()
    with pytest.raises(ValueError, match='uint8'):
        metrics.mse(out.astype(np.float32), real)
    with pytest.raises(ValueError, match='shape'):
        metrics.mse(out[:, :1], real)
    with pytest.raises(ValueError, match='mask'):
        metrics.foreground_mse(out, real, mask[:, :1])
    with pytest.raises(ValueError, match='peak'):
        metrics.psnr_peaks(out, '0')


def test_ratio_bands_and_summary_order_and_counts() -> None:
    assert metrics.ratio_band(0.0) == '0-5%'
    assert metrics.ratio_band(0.0499) == '0-5%'
    assert metrics.ratio_band(0.05) == '5-15%'
    assert metrics.ratio_band(0.15) == '15-100%'
    assert metrics.ratio_band(1.0) == '15-100%'
    base = {'mse': 1.0, 'psnr': 2.0, 'fmse': 3.0, 'fpsnr': 4.0, 'ssim': 0.5}
    rows = [{**base, 'subset': 'Hday2night', 'fg_ratio': 0.01},
            {**base, 'subset': 'Other', 'fg_ratio': 0.2, 'mse': 3.0},
            {**base, 'subset': 'HCOCO', 'fg_ratio': 0.3},
            {**base, 'subset': 'HCOCO', 'fg_ratio': 0.02, 'mse': 5.0}]
    groups = metrics.summarize(rows)
    assert list(groups) == ['all', 'HCOCO', 'Hday2night', 'Other', 'fg 0-5%', 'fg 5-15%', 'fg 15-100%']
    assert [groups[k]['n'] for k in groups] == [4, 2, 1, 1, 2, 0, 2]
    assert math.isnan(groups['fg 5-15%']['mse'])
    assert groups['HCOCO']['mse'] == pytest.approx(3.0)
    assert groups['fg 15-100%']['mse'] == pytest.approx(2.0)
    assert groups['all']['mse'] == pytest.approx(2.5)
    table = metrics.format_table(groups)
    assert '| HCOCO | 2 | 3.00 | 2.00 | 3.00 | 4.00 | 0.5000 |' in table
    assert '| fg 5-15% | 0 | - | - | - | - | - |' in table


def test_output_to_uint8_truncates_like_released_tensor2im() -> None:
    x = torch.tensor([-1.0, 1.0, 2 * 129.9 / 255 - 1, 2 * 0.99 / 255 - 1, 1.5, -3.0]).view(1, 3, 1, 2)
    u = output_to_uint8(x)
    assert u.shape == (1, 1, 2, 3)
    assert u.transpose(0, 3, 1, 2).reshape(-1).tolist() == [0, 255, 129, 0, 255, 0]
    # same numbers as the released numpy code on random outputs
    t = torch.rand(2, 3, 16, 16) * 2 - 1
    released = ((t.numpy().transpose(0, 2, 3, 1) + 1) / 2.0 * 255.0).astype(np.uint8)
    assert np.array_equal(output_to_uint8(t), released)
    assert output_to_uint8(t[0]).shape == (16, 16, 3)


def test_input_to_uint8_recovers_dataset_images_exactly(tmp_path) -> None:
    u = np.arange(256, dtype=np.uint8).reshape(1, 16, 16).repeat(3, 0)
    t = torch.from_numpy(u).float() / 127.5 - 1
    back = input_to_uint8(t)
    assert np.array_equal(back, u.transpose(1, 2, 0))
    mask = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
    assert mask_to_uint8(mask).tolist() == [[0, 255], [255, 0]]
    path = tmp_path / 'sub' / 'x.png'
    save_png(back, str(path))
    from PIL import Image
    assert np.array_equal(np.asarray(Image.open(path)), back)
    with pytest.raises(ValueError, match='uint8'):
        save_png(back.astype(np.float32), str(path))


def test_truncated_round_trip_lowers_levels_1_to_63() -> None:
    """The released protocol's real image: u / 127.5 - 1 truncated back gives u - 1 for u in 1..63, u otherwise."""
    u = np.arange(256, dtype=np.uint8)
    t = torch.from_numpy(u.reshape(1, 1, 256).repeat(3, 0)).float() / 127.5 - 1
    back = output_to_uint8(t)[0, :, 0].astype(int)
    expected = u.astype(int) - ((u >= 1) & (u <= 63))
    assert back.tolist() == expected.tolist()
    assert input_to_uint8(t)[0, :, 0].tolist() == u.tolist()  # rounding gives the loaded pixels back


def test_composite_prefix_json_and_table_cells() -> None:
    rows = [{'subset': 'HCOCO', 'fg_ratio': 0.1, 'mse': 1.0, 'psnr': 2.0, 'fmse': 3.0, 'fpsnr': 4.0, 'ssim': 0.5,
             'comp_mse': 10.0, 'comp_psnr': 20.0, 'comp_fmse': math.nan, 'comp_fpsnr': math.nan, 'comp_ssim': 0.25}]
    model, comp = metrics.summarize(rows), metrics.summarize(rows, prefix='comp_')
    assert comp['all']['mse'] == 10.0 and comp['all']['n_fg'] == 0 and math.isnan(comp['all']['fmse'])
    ready = metrics.json_ready(comp)
    assert ready['all']['fmse'] is None and ready['all']['mse'] == 10.0 and ready['fg 0-5%']['mse'] is None
    header, body = metrics.table_cells(model, comp)
    assert header[0][:2] == [('images', 1, 2), ('n', 1, 2)] and header[0][2] == ('MSE', 2)
    assert header[1] == ['harmonized', 'composite'] * 5
    assert body[0] == ['all', '1', '1.00', '10.00', '2.00', '20.00', '3.00', '-', '4.00', '-', '0.5000', '0.2500']
    assert [row[0] for row in body] == ['all', 'HCOCO', 'fg 0-5%', 'fg 5-15%', 'fg 15-100%']
    header, body = metrics.table_cells(model)
    assert header == [['images', 'n', 'MSE', 'PSNR', 'fMSE', 'fPSNR', 'SSIM']] and len(body[0]) == 7
    assert metrics.format_value('ssim', None) == '-' and metrics.format_value('mse', 2.005) == '2.00'


def test_crop_padding_undoes_the_padding() -> None:
    a = np.arange(2 * 6 * 7).reshape(2, 6, 7)
    assert np.array_equal(crop_padding(a, torch.tensor([1, 2, 3, 0])), a[:, 2:, 1:4])
    assert crop_padding(a, [0, 0, 0, 0]).shape == a.shape
