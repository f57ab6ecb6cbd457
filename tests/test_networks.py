"""Networks: released checkpoint format, partial convolution, batch independence, losses."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import Architecture, create_networks, networks

REF = Path(__file__).resolve().parent / 'reference'  # key tables of the released checkpoints


def tiny() -> tuple[nn.Module, nn.Module]:
    """G and E with 8 channels at the first layer, initialized as the released code does."""
    return create_networks(Architecture(ngf=8, ndf=8))


def key_table(net: nn.Module) -> list[str]:
    rows = []
    for key, value in net.state_dict().items():
        shape = 'x'.join(str(s) for s in value.shape) if value.dim() else 'scalar'
        rows.append(f'{key}\t{shape}\t{str(value.dtype).replace("torch.", "")}')
    return rows


def reference_table(name: str) -> list[str]:
    return (REF / f'checkpoint_keys_{name}.tsv').read_text().strip().split('\n')[1:]


def test_generator_keys_shapes_dtypes_match_release():
    net = networks.S2ADGenerator(20, 3, 64, norm='batch', use_dropout=True, style_dim=16)
    assert key_table(net) == reference_table('G')


def test_extractor_keys_shapes_dtypes_match_release():
    net = networks.StyleEncoder(style_dim=16, ndf=64, norm='batch')
    assert key_table(net) == reference_table('E')


def test_other_widths_scale_channels():
    g, e = (net.state_dict() for net in create_networks(Architecture(ngf=8, ndf=4)))
    assert g['model.model.0.weight'].shape == (8, 20, 4, 4)
    assert g['model.model.1.attention.0.weight'].shape == (16, 16, 1, 1)
    assert e['conv5f.weight'].shape == (32, 32, 3, 3)
    assert e['convs.weight'].shape == (16, 32, 1, 1)


def test_init_follows_released_scheme():
    torch.manual_seed(0)
    net, _ = create_networks(Architecture())
    conv = net.model.model[0].weight
    assert abs(conv.mean().item()) < 1e-3 and abs(conv.std().item() - 0.02) < 1e-3
    bn = net.model.model[1].model[2]
    assert abs(bn.weight.mean().item() - 1.0) < 0.01 and torch.all(bn.bias == 0)
    assert torch.all(net.model.model[3].bias == 0)
    assert net.weight.item() == pytest.approx(0.1)


def test_partial_conv_against_hand_computed_values():
    conv = networks.PartialConv2d(1, 1, kernel_size=3, stride=2, bias=True)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.fill_(0.5)
    x = torch.arange(25, dtype=torch.float32).view(1, 1, 5, 5)
    mask = torch.zeros(1, 1, 5, 5)
    mask[0, 0, :2, :2] = 1  # only the top-left window sees foreground: 4 pixels, values 0, 1, 5, 6
    out, update = conv(x, mask)
    assert out.shape == (1, 1, 2, 2)
    # window (0,0): S = 4, raw = 12 + 0.5, out = ((raw - b) * 9/4 + b) * 1 = 12 * 2.25 + 0.5 = 27.5
    assert out[0, 0, 0, 0].item() == pytest.approx(27.5, rel=1e-6)
    # other windows have S = 0: U = 0 and the output is 0 (no bias leaks outside the mask)
    assert torch.all(out[0, 0].flatten()[1:] == 0)
    assert update.flatten().tolist() == [1.0, 0.0, 0.0, 0.0]

    nobias = networks.PartialConv2d(1, 1, kernel_size=3, stride=2, bias=False)
    with torch.no_grad():
        nobias.weight.fill_(2.0)
    soft = torch.full((1, 1, 5, 5), 0.5)
    out, update = nobias(torch.ones(1, 1, 5, 5), soft)
    # S = 4.5 in every window, raw = 2 * 9 * 0.5 = 9, r = 9 / 4.5 = 2, U = clamp(4.5) = 1 -> 18
    assert torch.allclose(out, torch.full((1, 1, 2, 2), 18.0))
    assert torch.all(update == 1)


def test_generator_rejects_sides_not_multiple_of_256():
    net, _ = tiny()
    with pytest.raises(ValueError, match='multiples of 256'):
        net(torch.zeros(1, 3, 256, 300), torch.zeros(1, 1, 256, 300), torch.zeros(1, 16, 1, 1))


def test_generator_code_weight_is_clamped():
    torch.manual_seed(0)
    net = tiny()[0].eval()
    comp, mask = torch.rand(1, 3, 256, 256) * 2 - 1, torch.ones(1, 1, 256, 256)
    code = torch.randn(1, 16, 1, 1)
    with torch.no_grad():
        net.weight.fill_(-5.0)
        clamped = net(comp, mask, code)
        net.weight.fill_(0.001)
        floor = net(comp, mask, code)
    assert torch.equal(clamped, floor)


def _inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    comp = torch.rand(batch, 3, 256, 256, generator=g) * 2 - 1
    mask = torch.zeros(batch, 1, 256, 256)
    for i in range(batch):
        mask[i, :, 40 + 10 * i:160 + 10 * i, 60:200] = 1
    return comp, mask


@pytest.mark.parametrize('batch', [1, 3])
def test_forward_backward(batch):
    torch.manual_seed(0)
    G, E = tiny()
    comp, mask = _inputs(batch)
    z = E(comp, 1 - mask)
    out = G(comp, mask, z)
    assert z.shape == (batch, 16, 1, 1) and out.shape == (batch, 3, 256, 256)
    assert out.abs().max() <= 1
    out.abs().mean().backward()
    assert G.weight.grad is not None and E.conv1f.weight.grad is not None
    assert all(p.grad is not None for p in G.parameters())


@pytest.mark.parametrize('mode', ['per_sample', 'eval'])
def test_batch_of_three_equals_three_single_runs(mode):
    torch.manual_seed(0)
    G, E = tiny()
    # give BatchNorm non-trivial running statistics so that eval mode uses them
    comp, mask = _inputs(3)
    with torch.no_grad():
        G(comp, mask, E(comp, 1 - mask))

    def run(c, m, seeds):
        for net in (G, E):
            if mode == 'eval':
                net.eval()
            else:
                net.train()
                networks.set_per_sample(net, True, seeds)
        with torch.no_grad():
            return G(c, m, E(c, 1 - m))

    seeds = [11, 12, 13]
    batched = run(comp, mask, seeds)
    single = torch.cat([run(comp[i:i + 1], mask[i:i + 1], seeds[i:i + 1]) for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-6, rtol=0)
    if mode == 'per_sample':  # dropout is active: the same seed gives the same output, another seed another
        again = run(comp[:1], mask[:1], [11])
        other = run(comp[:1], mask[:1], [99])
        assert torch.equal(again, single[:1])
        assert not torch.allclose(other, single[:1])


def test_per_sample_norm_equals_released_batch_one_norm():
    """Per-image statistics are exactly what a BatchNorm in training mode computes at batch size 1."""
    torch.manual_seed(0)
    bn = networks.SampleBatchNorm2d(4)
    nn.init.normal_(bn.weight, 1, 0.2)
    nn.init.normal_(bn.bias, 0, 0.2)
    x = torch.randn(3, 4, 5, 6)
    reference = torch.cat([nn.functional.batch_norm(x[i:i + 1], None, None, bn.weight, bn.bias, True, 0.1,
                                                    bn.eps) for i in range(3)])
    bn.per_sample = True
    assert torch.allclose(bn(x), reference, atol=1e-6)
    assert torch.all(bn.running_mean == 0)  # per-image mode leaves running statistics alone


def test_channelwise_triplet_against_hand_values():
    a = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    p = torch.tensor([0.3, 1.0]).view(1, 2, 1, 1)
    n = torch.tensor([0.1, 3.0]).view(1, 2, 1, 1)
    eps = 1e-6  # torch.pairwise_distance adds eps to the difference
    ch0 = max(0.0, 0.1 + abs(0 - 0.3 + eps) - abs(0 - 0.1 + eps))
    ch1 = max(0.0, 0.1 + abs(1 - 1 + eps) - abs(1 - 3 + eps))
    expected = (ch0 + ch1) / 2
    got = networks.triplet_loss(a, p, n, margin=0.1, distance='channelwise')
    assert got.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.15, abs=1e-5)


def test_euclidean_triplet_against_hand_values():
    a = torch.tensor([[0.0, 0.0], [1.0, 1.0]]).view(2, 2, 1, 1)
    p = torch.tensor([[0.3, 0.4], [1.0, 1.0]]).view(2, 2, 1, 1)
    n = torch.tensor([[0.0, 0.2], [4.0, 5.0]]).view(2, 2, 1, 1)
    d_ap = [math.hypot(-0.3 + 1e-6, -0.4 + 1e-6), math.hypot(1e-6, 1e-6)]
    d_an = [math.hypot(1e-6, -0.2 + 1e-6), math.hypot(-3 + 1e-6, -4 + 1e-6)]
    expected = sum(max(0.0, 0.1 + x - y) for x, y in zip(d_ap, d_an)) / 2
    got = networks.triplet_loss(a, p, n, margin=0.1, distance='euclidean')
    assert got.item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.2, abs=1e-5)
    with pytest.raises(ValueError, match='channelwise or euclidean'):
        networks.triplet_loss(a, p, n, 0.1, 'cosine')


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_extractor_is_finite_under_autocast(dtype):
    torch.manual_seed(0)
    _, E = tiny()
    comp, mask = _inputs(2)
    with torch.autocast(device_type='cpu', dtype=dtype):
        z = E(comp, 1 - mask)
    assert torch.isfinite(z).all()
    assert torch.allclose(z.float(), E(comp, 1 - mask), atol=0.05, rtol=0.05)


def test_skip_connection_carries_the_in_place_leaky_relu():
    """The released (pix2pix) quirk the released weights expect: the skip holds LeakyReLU(x), not x."""
    torch.manual_seed(0)
    block = networks.UnetBlock(4, 8, innermost=True, norm_layer=nn.BatchNorm2d)
    x = torch.randn(1, 4, 8, 8)
    out = block(x.clone())
    assert torch.allclose(out[:, :4], F.leaky_relu(x, 0.2))
    assert not torch.allclose(out[:, :4], x)
