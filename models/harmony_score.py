"""The harmony score of a composite, as the released ``predict_harmony_score.py`` computes it.

The domain code extractor E (in eval mode: running BatchNorm statistics) gives a 16-d code to the foreground
and one to the background of the composite; d is the Euclidean distance between them and the score is
``exp(-0.04212·d)`` in (0, 1], larger = more harmonious (the paper's harmony score). Preprocessing of the released code:
the image and the 8-bit mask are resized to 256×256 with PIL bilinear (which averages when shrinking), the image
normalized to [-1, 1], the mask kept soft in [0, 1]; the background mask is the resized inverted mask,
resize(255 − mask)/255. A mask must be usable (:func:`util.pairs.net_mask`), the rule every tool shares.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torchvision.transforms.functional as TF
from PIL import Image

from util.pairs import ImageInput, describe, inverted, net_mask, read_pair, resize_to_net

from .factory import load_extractor

logger = logging.getLogger(__name__)

HARMONY_SCALE = 0.04212  # score = exp(-HARMONY_SCALE * d), the released constant
DEFAULT_E_WEIGHT = os.path.join('checkpoints', 'latest_net_E.pth')  # where the released extractor goes
# the extractor of this project's small demo model, used when DEFAULT_E_WEIGHT is missing
DEMO_E_WEIGHT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'checkpoints', 'demo',
                             'latest_net_E.pth')

Device = Union[str, torch.device]


def image_tensor(img: Image.Image) -> torch.Tensor:
    """(3, H, W) in [-1, 1]: ToTensor then Normalize(0.5, 0.5), as the released scripts do."""
    return TF.normalize(TF.to_tensor(img), [0.5] * 3, [0.5] * 3)


def default_weight() -> str:
    """``checkpoints/latest_net_E.pth``, or the shipped demo extractor (with a notice) when that file is missing.

    Raises:
        FileNotFoundError: neither file exists.
    """
    if os.path.exists(DEFAULT_E_WEIGHT):
        return DEFAULT_E_WEIGHT
    if os.path.isfile(DEMO_E_WEIGHT):
        shown = os.path.relpath(DEMO_E_WEIGHT)
        shown = shown if not shown.startswith('..') else DEMO_E_WEIGHT
        logger.warning('%s not found: using the shipped demo extractor %s, trained for this project\'s demo and '
                       'not the released one (its scores lie close to 1; only their order means something); put '
                       'the released latest_net_E.pth in checkpoints/ or pass --weight', DEFAULT_E_WEIGHT, shown)
        return shown
    raise FileNotFoundError(f'{DEFAULT_E_WEIGHT} not found: put the released latest_net_E.pth there or pass '
                            '--weight')


@dataclass(frozen=True)
class ScoreInput:
    """A composite prepared for E: image (3,256,256) in [-1, 1], soft foreground and background masks (1,256,256)."""

    image: torch.Tensor
    fg: torch.Tensor
    bg: torch.Tensor


@dataclass(frozen=True)
class HarmonyScore:
    """``score`` = exp(-0.04212·``distance``), ``distance`` = L2 distance of the foreground and background codes."""

    score: float
    distance: float

    def line(self, name: str) -> str:
        """The released script's output line, with 3 decimals (2 cannot tell close scores apart)."""
        return f'The harmony score of {name} is {self.score:.3f}'


def prepare_score_input(image: ImageInput, mask: ImageInput) -> ScoreInput:
    """The released preprocessing (see the module docstring).

    Raises:
        ValueError: a mask of another size than the image, or one that is not usable (:func:`util.pairs.net_mask`).
    """
    img, msk = read_pair(image, mask)
    net_mask(msk, describe(mask, 'mask'))
    fg = TF.to_tensor(resize_to_net(msk))
    bg = TF.to_tensor(resize_to_net(inverted(msk)))
    return ScoreInput(image_tensor(resize_to_net(img)), fg, bg)


class HarmonyScorer:
    """Harmony scores with an extractor E in eval mode (running BatchNorm statistics).

    Because E is in eval mode, a composite's score does not depend on the others in its batch.
    """

    def __init__(self, extractor: nn.Module, device: Optional[Device] = None) -> None:
        self.extractor = extractor
        self.device = torch.device(device) if device is not None else next(extractor.parameters()).device

    @classmethod
    def from_weights(cls, path: Optional[str] = None, device: Device = 'cpu', ndf: Optional[int] = None,
                     style_dim: Optional[int] = None) -> 'HarmonyScorer':
        """A scorer with the extractor of ``path`` (None: :func:`default_weight`), widths read from the file."""
        return cls(load_extractor(path or default_weight(), device, ndf, style_dim), device)

    def codes(self, inputs: Sequence[ScoreInput]) -> tuple[torch.Tensor, torch.Tensor]:
        """Foreground and background codes (N, style_dim) of prepared inputs, in one batch."""
        image = torch.stack([x.image for x in inputs]).to(self.device)
        masks = torch.stack([x.fg for x in inputs] + [x.bg for x in inputs]).to(self.device)
        was_training = self.extractor.training
        self.extractor.eval()
        try:
            with torch.inference_mode():
                codes = self.extractor(torch.cat([image, image]), masks).flatten(1).float()
        finally:
            self.extractor.train(was_training)
        return codes[:len(inputs)], codes[len(inputs):]

    def score_inputs(self, inputs: Sequence[ScoreInput]) -> list[HarmonyScore]:
        """Scores of prepared inputs, in one batch."""
        fg, bg = self.codes(inputs)
        distances = torch.linalg.vector_norm(fg - bg, dim=1).cpu().tolist()
        return [HarmonyScore(math.exp(-HARMONY_SCALE * d), d) for d in distances]

    def score(self, image: ImageInput, mask: ImageInput) -> HarmonyScore:
        """The harmony score of one composite."""
        return self.score_inputs([prepare_score_input(image, mask)])[0]

    def score_many(self, pairs: Sequence[tuple[ImageInput, ImageInput]], batch_size: int = 16) -> list[HarmonyScore]:
        """Scores of many composites, ``batch_size`` at a time; raises on the first bad input."""
        scores: list[HarmonyScore] = []
        for start in range(0, len(pairs), batch_size):
            scores += self.score_inputs([prepare_score_input(i, m) for i, m in pairs[start:start + batch_size]])
        return scores


def harmony_score(image: ImageInput, mask: ImageInput, weight: Optional[str] = None, device: Device = 'cpu',
                  ndf: Optional[int] = None, style_dim: Optional[int] = None) -> HarmonyScore:
    """The harmony score of one composite with the extractor of ``weight`` (None: :func:`default_weight`).

    Loads the extractor for this call; keep a :class:`HarmonyScorer` for many composites.
    """
    return HarmonyScorer.from_weights(weight, device, ndf, style_dim).score(image, mask)
