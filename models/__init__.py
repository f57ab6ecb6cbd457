"""Models: networks, their wiring, losses and checkpoints.

``MODELS`` is the registry that ``--model`` chooses from (argparse ``choices``). To add a model, write a
:class:`models.base_model.BaseModel` subclass in ``<name>_model.py`` (``set_input``, ``forward``,
``optimize_parameters``, optionally ``modify_commandline_options``) and register it here. Networks are built
and loaded through :mod:`models.factory` alone.
"""
from __future__ import annotations

import argparse
from typing import Callable

from .bargainnet_model import BargainNetModel, harmonize
from .base_model import BaseModel
from .factory import Architecture, create_networks, load_bargainnet, load_extractor, select_device
from .harmonizer import Harmonizer
from .harmony_score import HarmonyScorer, harmony_score

MODELS: dict[str, type[BaseModel]] = {'bargainnet': BargainNetModel}

__all__ = ['MODELS', 'BaseModel', 'BargainNetModel', 'Architecture', 'create_networks', 'load_bargainnet',
           'load_extractor', 'select_device', 'harmonize', 'HarmonyScorer', 'Harmonizer', 'harmony_score',
           'get_model_class', 'get_option_setter', 'create_model']


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
