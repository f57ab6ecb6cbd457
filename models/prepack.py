"""Prepacked oneDNN weights for the generator's transposed convolutions in CPU inference.

On the CPU, PyTorch hands a transposed convolution's weights to oneDNN in PyTorch's plain layout, and oneDNN
reorders them into its blocked layout on every call. For BargainNet's inner decoder levels (8×8 to 1×1
inputs, 1024×512×4×4 weights) that reorder costs several times the arithmetic: with the weights reordered
once, the generator's transposed convolutions take about 40% less CPU time at ngf 64
(``scripts/benchmark_test.py`` measures the whole evaluation).

:func:`prepack` keeps every module, parameter and ``state_dict`` as it is; it gives each ``ConvTranspose2d``
a second way to run for a given input shape: the oneDNN kernel of the same convolution with the weights
reordered once. The packed kernel is used for a shape only after it gave, on a random input of that shape,
exactly the output of the module's own ``forward`` (``torch.equal``); otherwise the layer keeps its own
``forward`` for that shape (PyTorch runs some shapes with another kernel). The packed path runs only where
it can: float32 CPU tensors in the default memory layout, no autograd, no autocast, weights that are not
inference tensors (made under ``torch.inference_mode``); weights changed in place
(an optimizer step, ``load_state_dict``) are packed again. Without oneDNN's operators (old or unusual
PyTorch builds) nothing changes. Plain convolutions are left alone: their packed oneDNN kernels round
differently from PyTorch's own calls.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

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
    except (AttributeError, RuntimeError):
        return False
    return True


class _PackedConv:
    """The ``forward`` of one prepacked transposed convolution, with its packed weights per input shape (None:
    the module's own code for that shape). An object, not a bound method, so that copies and pickles keep it."""

    def __init__(self, module: nn.ConvTranspose2d) -> None:
        self.module = module
        self.by_shape: dict[tuple[int, ...], Optional[torch.Tensor]] = {}
        self.versions: Optional[tuple[int, int]] = None  # of the weights packed in by_shape

    def __deepcopy__(self, memo: dict) -> '_PackedConv':
        return _PackedConv(copy.deepcopy(self.module, memo))  # packed tensors are not copied

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

    def run(self, x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        m = self.module
        return torch.ops.mkldnn._convolution_transpose_pointwise(
            x, packed, m.bias, list(m.padding), list(m.output_padding), list(m.stride), list(m.dilation),
            m.groups, 'none', [], '')

    def eager(self, x: torch.Tensor) -> torch.Tensor:
        """What ``nn.ConvTranspose2d.forward`` computes without ``output_size``."""
        m = self.module
        return F.conv_transpose2d(x, m.weight, m.bias, m.stride, m.padding, m.output_padding, m.groups, m.dilation)

    def pack(self, shape: tuple[int, ...]) -> Optional[torch.Tensor]:
        """Reorder the weights for ``shape``; keep them only if the packed kernel matches :meth:`eager` exactly."""
        m = self.module
        with torch.no_grad():
            w = m.weight.detach()
            try:
                packed = torch.ops.mkldnn._reorder_convolution_transpose_weight(
                    w, list(m.padding), list(m.output_padding), list(m.stride), list(m.dilation), m.groups,
                    list(shape))
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

    def __call__(self, x: torch.Tensor, output_size: Optional[Any] = None) -> torch.Tensor:
        if output_size is not None:
            return nn.ConvTranspose2d.forward(self.module, x, output_size)
        if not self.usable(x):
            return self.eager(x)
        versions = self._versions()
        if versions != self.versions:  # the weights changed in place: pack again
            self.by_shape.clear()
            self.versions = versions
        shape = tuple(x.shape)
        if shape not in self.by_shape:
            self.by_shape[shape] = self.pack(shape)
        packed = self.by_shape[shape]
        return self.eager(x) if packed is None else self.run(x, packed)


def _packable(m: nn.Module) -> bool:
    return type(m) is nn.ConvTranspose2d and m.padding_mode == 'zeros'


def prepack(net: nn.Module) -> int:
    """Let ``net``'s transposed convolutions run with prepacked oneDNN weights on the CPU, where bit-identical.

    Returns the number of layers that got the packed path (0 where oneDNN's operators are missing).
    Call :func:`unpack` to undo. Parameters, buffers and ``state_dict`` are untouched; ``copy.deepcopy``
    and pickling give a copy that packs its own weights.
    """
    if not available():
        logger.debug('oneDNN prepacking is not available in this PyTorch build')
        return 0
    n = 0
    for m in net.modules():
        if not _packable(m) or '_prepacked' in m.__dict__:
            continue
        m._prepacked = m.forward = _PackedConv(m)  # forward: what nn.Module.__call__ runs
        n += 1
    return n


def unpack(net: nn.Module) -> None:
    """Undo :func:`prepack`: every transposed convolution runs its own ``forward`` again."""
    for m in net.modules():
        if '_prepacked' in m.__dict__:
            del m._prepacked
            m.__dict__.pop('forward', None)
