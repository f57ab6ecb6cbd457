"""Shared fixtures: a tiny iHarmony4-layout dataset made from generated images, and tiny options."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SUBSETS = ('HCOCO', 'HAdobe5k', 'HFlickr', 'Hday2night')


def load_script(name: str) -> ModuleType:
    """Import ``scripts/<name>.py`` from its path, once (scripts are run as files, not a package)."""
    key = f'scripts_{name}'
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / 'scripts' / f'{name}.py')
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[key]


def write_tiny_iharmony4(root: Path, per_subset: int = 2, size: tuple[int, int] = (320, 272),
                         seed: int = 0) -> Path:
    """Write a small iHarmony4-layout dataset: smooth random photos, elliptic masks, colour-shifted composites.

    Every subset gets ``per_subset`` training and ``per_subset`` test composites of ``size`` (W, H). Names
    follow the iHarmony4 patterns (hyphens in Hday2night).
    """
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    lines = {'train': [], 'test': []}
    for sub in SUBSETS:
        for d in ('composite_images', 'masks', 'real_images'):
            (root / sub / d).mkdir(parents=True, exist_ok=True)
        sub_lines = {'train': [], 'test': []}
        for i in range(2 * per_subset):
            split = 'train' if i < per_subset else 'test'
            base = rng.uniform(40, 215, size=3)
            grad = rng.uniform(-60, 60, size=(2, 3))
            real = base + grad[0] * (xx[..., None] / w - 0.5) + grad[1] * (yy[..., None] / h - 0.5)
            real = real + rng.normal(0, 6, size=real.shape)
            real = np.clip(real, 0, 255).astype(np.uint8)
            cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h
            rx, ry = rng.uniform(0.15, 0.3) * w, rng.uniform(0.15, 0.3) * h
            mask = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1).astype(np.uint8) * 255
            shift = rng.uniform(0.6, 1.4, size=3)
            comp = real.astype(np.float32)
            comp[mask > 0] = np.clip(comp[mask > 0] * shift, 0, 255)
            comp = comp.astype(np.uint8)
            real_name = f'd{1000 + i}-2012-{i:02d}' if sub == 'Hday2night' else f'{sub[1].lower()}{1000 + i}'
            mask_name = f'{real_name}_{i + 1}'
            comp_name = f'{mask_name}_{(i % 3) + 1}.jpg'
            Image.fromarray(real).save(root / sub / 'real_images' / f'{real_name}.jpg', quality=95)
            Image.fromarray(mask).save(root / sub / 'masks' / f'{mask_name}.png')
            Image.fromarray(comp).save(root / sub / 'composite_images' / comp_name, quality=95)
            sub_lines[split].append(comp_name)
            lines[split].append(f'{sub}/composite_images/{comp_name}')
        for split in ('train', 'test'):
            (root / sub / f'{sub}_{split}.txt').write_text('\n'.join(sub_lines[split]) + '\n')
    for split in ('train', 'test'):
        (root / f'IHD_{split}.txt').write_text('\n'.join(lines[split]) + '\n')
    return root


@pytest.fixture(scope='session')
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only tiny iHarmony4 dataset shared by the session (copy it before modifying)."""
    return write_tiny_iharmony4(tmp_path_factory.mktemp('ihd'))


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    import torch
    torch.set_num_threads(2)
    os.environ.setdefault('OMP_NUM_THREADS', '2')
