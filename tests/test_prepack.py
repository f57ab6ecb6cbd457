"""models/prepack.py: prepacked convolutions give bit-identical outputs, and only where they can."""
from __future__ import annotations

import copy
import pickle

import pytest
import torch

from models import networks, prepack

pytestmark = pytest.mark.skipif(not prepack.available(), reason="this PyTorch build lacks oneDNN's packed operators")


def make_pair(ngf: int, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Two generators with the same weights: one to prepack, one left as it is."""
    torch.manual_seed(seed)
    G = networks.define_G(20, 3, ngf, 's2ad', 'batch', True, 16)
    return G, copy.deepcopy(G)


def packed_eval_pair(ngf: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A prepacked generator and its unpacked twin, both in eval mode."""
    G, plain = make_pair(ngf)
    G.eval()
    plain.eval()
    prepack.prepack(G)
    return G, plain


def inputs(n: int) -> list[tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.rand(1, 3, 256, 256, generator=gen) * 2 - 1,
             (torch.rand(1, 1, 256, 256, generator=gen) > 0.3 + 0.2 * i).float(),
             torch.randn(1, 16, 1, 1, generator=gen)) for i in range(n)]


def packed_shapes(G: torch.nn.Module) -> list[bool]:
    return [p is not None for m in G.modules() if '_prepacked' in m.__dict__ for p in m._prepacked.by_input.values()]


@pytest.mark.parametrize('per_image', [True, False])
def test_generator_gives_bit_identical_outputs(per_image):
    G, plain = make_pair(32)
    for net in (G, plain):
        net.train(per_image)
        networks.set_per_sample(net, per_image, [0])
    state = {k: v.clone() for k, v in G.state_dict().items()}
    # ngf 32: the 8 transposed convolutions and the four 256x256x4x4 convolutions of the inner levels
    big = [m for m in G.modules() if type(m) is torch.nn.Conv2d and m.weight.numel() >= 2 ** 20]
    assert len(big) == 4 and prepack.prepack(G) == 8 + 4
    with torch.inference_mode():
        for x in inputs(2):
            assert torch.equal(G(*x), plain(*x))
    used = packed_shapes(G)
    assert len(used) == 12 and sum(used) >= 8  # every layer decided for its shape; most run packed
    assert all('_conv_forward' in m.__dict__ for m in big)
    assert G.state_dict().keys() == state.keys() and all(torch.equal(G.state_dict()[k], v) for k, v in state.items())
    prepack.unpack(G)
    assert not any(k in m.__dict__ for m in G.modules() for k in ('_prepacked', 'forward', '_conv_forward'))


def test_extractor_partial_convolutions_give_bit_identical_codes():
    torch.manual_seed(0)
    E = networks.define_E(16, 64, 'batch').eval()
    plain = copy.deepcopy(E)
    assert prepack.prepack(E) == 2  # conv4f and conv5f: 256x512 and 512x512 3x3 weights
    with torch.inference_mode():
        for image, mask, _ in inputs(3):
            for region in (mask, 1 - mask):
                assert torch.equal(E(image, region), plain(image, region))
    assert all(packed_shapes(E))


def test_weights_changed_in_place_are_packed_again():
    G, plain = packed_eval_pair(16)
    x = inputs(1)[0]
    with torch.no_grad():
        G(*x)
        for net in (G, plain):
            for p in net.parameters():
                p.mul_(1.5)  # what an optimizer step or load_state_dict does
        assert torch.equal(G(*x), plain(*x))
    G.load_state_dict(networks.define_G(20, 3, 16, 's2ad', 'batch', True, 16).state_dict())
    plain.load_state_dict(G.state_dict())
    with torch.no_grad():
        assert torch.equal(G(*x), plain(*x))


def test_autograd_and_other_dtypes_use_the_module_itself():
    G, plain = make_pair(8)
    for net in (G, plain):
        networks.set_per_sample(net, True, [0])  # training mode with repeatable dropout
    prepack.prepack(G)
    x = inputs(1)[0]
    out, ref = G(*x), plain(*x)  # grad enabled: the packed operator has no backward
    assert torch.equal(out, ref) and out.requires_grad
    out.mean().backward()
    ref.mean().backward()
    for (name, p), q in zip(G.named_parameters(), plain.parameters()):
        assert torch.equal(p.grad, q.grad), name
    assert packed_shapes(G) == []  # nothing was packed for a forward with autograd
    with torch.no_grad():
        G.double()
        plain.double()
        assert torch.equal(G(*(t.double() for t in x)), plain(*(t.double() for t in x)))


def test_deepcopy_packs_its_own_weights():
    G, plain = packed_eval_pair(8)
    x = inputs(1)[0]
    with torch.no_grad():
        G(*x)
        twin = copy.deepcopy(G)
        for p in twin.parameters():
            p.add_(0.01)  # the copy's weights, not the original's, must be used
        for p in plain.parameters():
            p.add_(0.01)
        assert torch.equal(twin(*x), plain(*x))
    layer = next(m for m in twin.modules() if '_prepacked' in m.__dict__)
    assert layer._prepacked.module is layer
    # pickled (as for spawned loader workers): the packed tensors stay behind, the copy packs its own
    clone = pickle.loads(pickle.dumps(G))
    layer = next(m for m in clone.modules() if '_prepacked' in m.__dict__)
    assert layer._prepacked.module is layer and layer._prepacked.by_input == {}
    with torch.no_grad():
        assert torch.equal(clone(*x), G(*x)) and any(packed_shapes(clone))


def test_each_thread_count_decides_for_itself():
    """PyTorch's kernel for a shape can change with the thread count, so each count gets its own decision."""
    G, plain = packed_eval_pair(32)
    x = inputs(1)[0]
    threads = torch.get_num_threads()
    try:
        with torch.inference_mode():
            for n in (1, 2):
                torch.set_num_threads(n)
                assert torch.equal(G(*x), plain(*x))
    finally:
        torch.set_num_threads(threads)
    layer = next(m for m in G.modules() if '_prepacked' in m.__dict__)
    assert sorted(n for _, n in layer._prepacked.by_input) == [1, 2]
