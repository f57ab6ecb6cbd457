"""Models: networks, their wiring, losses and checkpoints.

``MODELS`` is the registry that ``--model`` chooses from (argparse ``choices``). To add a model, write a
:class:`models.base_model.BaseModel` subclass in ``<name>_model.py`` (``set_input``, ``forward``,
``optimize_parameters``, optionally ``modify_commandline_options``) and register it here.
"""
from __future__ import annotations

import argparse
from typing import Callable

from .base_model import BaseModel
from .bargainnet_model import BargainNetModel
from .inference import HarmonyScorer, Harmonizer, harmonize, harmony_score, load_bargainnet, load_extractor  # noqa: F401

MODELS: dict[str, type[BaseModel]] = {'bargainnet': BargainNetModel}


def get_model_class(name: str) -> type[BaseModel]:
    """The model class registered as ``name``; ValueError listing the valid names otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f'model [{name}] is not known; choose one of {", ".join(sorted(MODELS))}') from None


def get_option_setter(name: str) -> Callable[[argparse.ArgumentParser, bool], argparse.ArgumentParser]:
    return get_model_class(name).modify_commandline_options


def create_model(opt: argparse.Namespace) -> BaseModel:
    """Instantiate the model of ``opt.model``; call ``setup()`` on it before use."""
    return get_model_class(opt.model)(opt)
