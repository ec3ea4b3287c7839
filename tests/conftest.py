"""Shared fixtures: where the team's reference data lives.

``../shared`` beside the checkout holds the oracle outputs and the benchmark images. Tests that
need it skip with a reason when it is absent (set REALSR_SHARED to point elsewhere).
"""
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get('REALSR_SHARED', REPO_ROOT.parent / 'shared'))


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f'{path} is absent: the reference data in ../shared (or $REALSR_SHARED) is needed for this test')
    return path


@pytest.fixture(scope='session')
def shared_dir() -> Path:
    return _require(SHARED_DIR)


@pytest.fixture(scope='session')
def oracle_dir() -> Path:
    return _require(SHARED_DIR / 'oracle')


@pytest.fixture(scope='session')
def datasets_dir() -> Path:
    return _require(SHARED_DIR / 'datasets')


@pytest.fixture(scope='session')
def seed_options_dir() -> Path:
    return _require(SHARED_DIR / 'reference' / 'seed_options')


def write_pair_folders(root: Path, n_train=8, n_val=2, hr_size=48, scale=4, seed=0):
    """Small synthetic photos-like pairs: smooth colour fields plus texture, LR by area
    downscaling. Returns a dict of the four folders."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    folders = {}
    for split, n in (('train', n_train), ('val', n_val)):
        hr_dir, lr_dir = root / split / 'HR', root / split / f'LR_x{scale}'
        hr_dir.mkdir(parents=True, exist_ok=True)
        lr_dir.mkdir(parents=True, exist_ok=True)
        yy, xx = np.mgrid[0:hr_size, 0:hr_size] / hr_size
        for i in range(n):
            base = np.stack([np.sin(6 * xx * (c + 1) + rng.uniform(0, 6)) * np.cos(5 * yy + c) for c in range(3)], -1)
            img = np.clip((base * 0.4 + 0.5 + rng.normal(0, 0.05, base.shape)) * 255, 0, 255).astype(np.uint8)
            cv2.imwrite(str(hr_dir / f'img{i:02d}.png'), img)
            lr = cv2.resize(img, (hr_size // scale, hr_size // scale), interpolation=cv2.INTER_AREA)
            cv2.imwrite(str(lr_dir / f'img{i:02d}.png'), lr)
        folders[f'{split}_gt'], folders[f'{split}_lq'] = str(hr_dir), str(lr_dir)
    return folders


@pytest.fixture()
def pair_folders(tmp_path):
    return write_pair_folders(tmp_path / 'data')


# torchvision's vgg19 feature convs: (features index, in channels, out channels)
VGG19_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
               (16, 256, 256), (19, 256, 512), (21, 512, 512), (23, 512, 512), (25, 512, 512), (28, 512, 512),
               (30, 512, 512), (32, 512, 512), (34, 512, 512)]


def fake_vgg19_weights(path):
    """Random weights in torchvision's vgg19 layout, so perceptual losses run without the real
    (downloaded) file; returns the path as a string."""
    import torch
    g = torch.Generator().manual_seed(0)
    sd = {}
    for idx, cin, cout in VGG19_CONVS:
        sd[f'features.{idx}.weight'] = torch.randn(cout, cin, 3, 3, generator=g) * (2 / (cin * 9))**0.5
        sd[f'features.{idx}.bias'] = torch.zeros(cout)
    torch.save(sd, path)
    return str(path)


@pytest.fixture()
def random_vgg19(tmp_path, monkeypatch):
    """REALSR_VGG_WEIGHTS pointing at random vgg19 weights (see :func:`fake_vgg19_weights`)."""
    path = fake_vgg19_weights(tmp_path / 'vgg19.pth')
    monkeypatch.setenv('REALSR_VGG_WEIGHTS', path)
    return path
