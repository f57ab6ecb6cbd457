"""Prepacked oneDNN weights for the networks' large convolutions in CPU inference.

On the CPU, PyTorch hands a convolution's weights to oneDNN in PyTorch's plain layout, and oneDNN reorders
them into its blocked layout on every call. For BargainNet's inner levels (16×16 to 1×1 inputs, 512×512×4×4
and 1024×512×4×4 weights at ngf 64) that reorder costs as much as the arithmetic or several times it: with the
weights reordered once, the generator's transposed convolutions take about 40% less CPU time at ngf 64
(``scripts/benchmark_test.py`` measures the whole evaluation).

:func:`prepack` keeps every module, parameter and ``state_dict`` as it is; it gives each ``ConvTranspose2d``,
and each ``Conv2d`` (subclasses such as the extractor's partial convolutions included) with at least 2**20
weights, a second way to run for a given input shape: the oneDNN kernel of the same convolution with the
weights reordered once. Transposed convolutions use oneDNN's operator for packed weights; plain ones pass
oneDNN tensors through ``torch.mkldnn_convolution``, the blocked layouts of PyTorch's own call. The packed
kernel is used for a shape (and thread count) only after it gave, on a random input of that shape, exactly
the output of the module's own code (``torch.equal``); otherwise the layer keeps its own code for that shape
(PyTorch runs some shapes with another kernel: at ngf 64, the transposed convolution of the 4×4 level). The
packed path runs only where it can: float32 CPU tensors in the default memory layout, no autograd, no
autocast, weights that are not inference tensors (made under ``torch.inference_mode``); weights changed in
place (an optimizer step, ``load_state_dict``) are packed again. Without oneDNN's operators (old or unusual
PyTorch builds) nothing changes. Smaller plain convolutions are left alone: there the conversions to and from
oneDNN tensors cost more than the reorder they save.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Optional

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)

_PROBE_SEED = 20210309


def available() -> bool:
    """Whether this PyTorch build has oneDNN and its prepacked-convolution operators."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        ops = torch.ops.mkldnn
        for name in ('_reorder_convolution_transpose_weight', '_convolution_transpose_pointwise'):
            getattr(ops, name)
        torch._C._nn.mkldnn_reorder_conv2d_weight, torch.mkldnn_convolution  # noqa: B018 (present or not)
    except (AttributeError, RuntimeError):
        return False
    return True


class _Packed:
    """One prepacked convolution: its packed weights per input shape and thread count (None: the module's own
    code there). An object, not a bound method, so that copies and pickles keep it."""

    hook = ''  # the module attribute it replaces

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.by_input: dict[tuple[tuple[int, ...], int], Optional[torch.Tensor]] = {}
        self.versions: Optional[tuple[int, int]] = None  # of the weights packed in by_input

    def __deepcopy__(self, memo: dict) -> '_Packed':
        return type(self)(copy.deepcopy(self.module, memo))  # packed tensors are not copied

    def __getstate__(self) -> dict:
        # oneDNN's packed tensors cannot be pickled (spawned loader workers, torch.save of a whole module):
        # the copy packs its weights again
        return {'module': self.module}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state['module'])

    def _versions(self) -> tuple[int, int]:
        bias = self.module.bias
        return self.module.weight._version, (bias._version if bias is not None else -1)

    def usable(self, x: torch.Tensor) -> bool:
        m = self.module
        return (x.device.type == 'cpu' and x.dtype == torch.float32 and x.dim() == 4 and x.is_contiguous()
                and m.weight.device.type == 'cpu' and m.weight.dtype == torch.float32
                and not m.weight.is_inference()  # weights made under inference_mode have no version counter
                and not (torch.is_grad_enabled() and (x.requires_grad or m.weight.requires_grad))
                and not torch.is_autocast_enabled('cpu'))

    def reorder(self, shape: tuple[int, ...]) -> torch.Tensor:
        """The weights in oneDNN's layout for inputs of ``shape``."""
        raise NotImplementedError

    def run(self, x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        """The convolution of ``x`` with the packed weights."""
        raise NotImplementedError

    def eager(self, x: torch.Tensor) -> torch.Tensor:
        """What the module computes with its class's own code (PyTorch's call)."""
        raise NotImplementedError

    def pack(self, shape: tuple[int, ...]) -> Optional[torch.Tensor]:
        """Reorder the weights for ``shape``; keep them only if the packed kernel matches :meth:`eager` exactly."""
        m = self.module
        with torch.no_grad():
            try:
                packed = self.reorder(shape)
                gen = torch.Generator().manual_seed(_PROBE_SEED)
                probe = torch.randn(shape, generator=gen)
                same = torch.equal(self.run(probe, packed), self.eager(probe))
            except RuntimeError as exc:  # an operator this build lacks for these arguments
                logger.debug('no prepacked kernel for %s at %s: %s', m, shape, exc)
                return None
        if not same:
            logger.debug('%s at %s: PyTorch uses another kernel; kept as it is', m, shape)
            return None
        return packed

    def packed_for(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """The packed weights to use for ``x``, or None for the module's own code."""
        if not self.usable(x):
            return None
        versions = self._versions()
        if versions != self.versions:  # the weights changed in place: pack again
            self.by_input.clear()
            self.versions = versions
        # PyTorch's choice of kernel can depend on the thread count
        key = (tuple(x.shape), torch.get_num_threads())
        if key not in self.by_input:
            self.by_input[key] = self.pack(key[0])
        return self.by_input[key]


class _PackedConvTranspose(_Packed):
    """The ``forward`` of a ``ConvTranspose2d``, through oneDNN's operator for prepacked transposed weights."""

    hook = 'forward'

    def reorder(self, shape: tuple[int, ...]) -> torch.Tensor:
        m = self.module
        return torch.ops.mkldnn._reorder_convolution_transpose_weight(
            m.weight.detach(), list(m.padding), list(m.output_padding), list(m.stride), list(m.dilation), m.groups,
            list(shape))

    def run(self, x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        m = self.module
        return torch.ops.mkldnn._convolution_transpose_pointwise(
            x, packed, m.bias, list(m.padding), list(m.output_padding), list(m.stride), list(m.dilation),
            m.groups, 'none', [], '')

    def eager(self, x: torch.Tensor) -> torch.Tensor:
        return nn.ConvTranspose2d.forward(self.module, x)

    def __call__(self, x: torch.Tensor, output_size: Optional[Any] = None) -> torch.Tensor:
        packed = self.packed_for(x) if output_size is None else None
        return nn.ConvTranspose2d.forward(self.module, x, output_size) if packed is None else self.run(x, packed)


class _PackedConv2d(_Packed):
    """The ``_conv_forward`` of a ``Conv2d`` (subclasses included), through oneDNN tensors in its blocked layout
    with the weights reordered once: the kernel and layouts of PyTorch's own call, without the reorder."""

    hook = '_conv_forward'

    def reorder(self, shape: tuple[int, ...]) -> torch.Tensor:
        m = self.module
        return torch._C._nn.mkldnn_reorder_conv2d_weight(m.weight.detach().to_mkldnn(), list(m.padding),
                                                         list(m.stride), list(m.dilation), m.groups, list(shape))

    def run(self, x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        m = self.module
        bias = m.bias.detach().to_mkldnn() if m.bias is not None else None
        return torch.mkldnn_convolution(x.to_mkldnn(), packed, bias, list(m.padding), list(m.stride),
                                        list(m.dilation), m.groups).to_dense()

    def eager(self, x: torch.Tensor) -> torch.Tensor:
        m = self.module
        return nn.Conv2d._conv_forward(m, x, m.weight, m.bias)

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
        m = self.module
        packed = self.packed_for(x) if weight is m.weight and bias is m.bias else None
        return nn.Conv2d._conv_forward(m, x, weight, bias) if packed is None else self.run(x, packed)


# Below this many weights, a plain convolution's reorder costs less than the packed path's own conversions.
_MIN_CONV2D_WEIGHTS = 2 ** 20


def _packer(m: nn.Module) -> Optional[type[_Packed]]:
    """Which packed path ``m`` gets, if any."""
    if type(m) is nn.ConvTranspose2d and m.padding_mode == 'zeros':
        return _PackedConvTranspose
    if (isinstance(m, nn.Conv2d) and m.padding_mode == 'zeros' and not isinstance(m.padding, str)
            and m.weight.numel() >= _MIN_CONV2D_WEIGHTS):
        return _PackedConv2d
    return None


def prepack(net: nn.Module) -> int:
    """Let ``net``'s transposed convolutions, and its plain convolutions of at least 2**20 weights, run with
    prepacked oneDNN weights on the CPU, where bit-identical.

    Returns the number of layers that got the packed path (0 where oneDNN's operators are missing).
    Call :func:`unpack` to undo. Parameters, buffers and ``state_dict`` are untouched; ``copy.deepcopy``
    and pickling give a copy that packs its own weights.
    """
    if not available():
        logger.debug('oneDNN prepacking is not available in this PyTorch build')
        return 0
    n = 0
    for m in net.modules():
        packer = _packer(m)
        if packer is None or '_prepacked' in m.__dict__:
            continue
        m._prepacked = packed = packer(m)
        setattr(m, packer.hook, packed)  # an instance attribute: what nn.Module.__call__ or forward then runs
        n += 1
    return n


def unpack(net: nn.Module) -> None:
    """Undo :func:`prepack`: every convolution runs its own code again."""
    for m in net.modules():
        if '_prepacked' in m.__dict__:
            m.__dict__.pop(m._prepacked.hook, None)
            del m._prepacked
