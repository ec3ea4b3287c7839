"""Data pipeline: path discovery, io backends, lmdb, transforms, datasets, image utils, default data."""
import logging
import os
import pickle
import random
import runpy

import cv2
import numpy as np
import pytest
import torch

from realsr.data import build_dataset
from realsr.data import default_data
from realsr.data.data_util import (paired_paths_from_folder, paired_paths_from_lmdb, paired_paths_from_meta_info_file,
                                   paths_from_folder, paths_from_lmdb, scandir)
from realsr.data.file_client import FileClient
from realsr.data.lmdb_util import make_lmdb_from_folder, make_paired_lmdb
from realsr.data.paired_image_dataset import PairedImageDataset
from realsr.data.single_image_dataset import SingleImageDataset
from realsr.data.transforms import augment, mod_crop, paired_random_crop
from realsr.utils.img_util import ImageReadError, ImageWriteError, imfrombytes, img2tensor, imwrite, tensor2img

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _rand_img(h, w, c=3, seed=0):
    rng = np.random.default_rng(seed)
    shape = (h, w, c) if c else (h, w)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _nearest_up(img, scale):
    return np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)


def _make_pairs(root, names=('a', 'b', 'c'), scale=2, lq_hw=(12, 16), tmpl='{}', gray=()):
    """GT = nearest-upsampled LQ, so every aligned crop of the pair can be checked exactly."""
    gt_dir, lq_dir = root / 'gt', root / 'lq'
    gt_dir.mkdir(parents=True, exist_ok=True)
    lq_dir.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        lq = _rand_img(*lq_hw, c=0 if name in gray else 3, seed=i)
        cv2.imwrite(str(lq_dir / f'{tmpl.format(name)}.png'), lq)
        cv2.imwrite(str(gt_dir / f'{name}.png'), _nearest_up(lq, scale))
    return gt_dir, lq_dir


def _paired_opt(gt_dir, lq_dir, phase='val', scale=2, **kw):
    opt = {
        'name': 'test', 'type': 'PairedImageDataset', 'dataroot_gt': str(gt_dir), 'dataroot_lq': str(lq_dir),
        'io_backend': {'type': 'disk'}, 'phase': phase, 'scale': scale, 'filename_tmpl': '{}',
    }
    if phase == 'train':
        opt.update(gt_size=8, use_hflip=True, use_rot=True)
    opt.update(kw)
    return opt


def _up_tensor(t, scale):
    return t.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)


# ---------------------------------------------------------------------------------------------
# path discovery
# ---------------------------------------------------------------------------------------------
def test_scandir(tmp_path):
    (tmp_path / 'sub').mkdir()
    for rel in ['b.png', 'a.png', 'c.txt', '.hidden.png', 'sub/d.png']:
        (tmp_path / rel).write_bytes(b'x')
    assert scandir(tmp_path) == ['a.png', 'b.png', 'c.txt']
    assert scandir(tmp_path, suffix='.png') == ['a.png', 'b.png']
    assert scandir(tmp_path, suffix=('.png', '.txt'), recursive=True) == ['a.png', 'b.png', 'c.txt',
                                                                          os.path.join('sub', 'd.png')]
    assert scandir(tmp_path, suffix='.png', full_path=True) == [str(tmp_path / 'a.png'), str(tmp_path / 'b.png')]
    with pytest.raises(TypeError):
        scandir(tmp_path, suffix=['.png'])
    with pytest.raises(FileNotFoundError, match='nope'):
        scandir(tmp_path / 'nope')


def test_paired_paths_from_folder_and_tmpl(tmp_path):
    gt_dir, lq_dir = _make_pairs(tmp_path, tmpl='{}x2')
    (gt_dir / 'notes.txt').write_text('not an image')  # ignored
    paths = paired_paths_from_folder([str(lq_dir), str(gt_dir)], ['lq', 'gt'], '{}x2')
    assert [os.path.basename(p['gt_path']) for p in paths] == ['a.png', 'b.png', 'c.png']
    assert [os.path.basename(p['lq_path']) for p in paths] == ['ax2.png', 'bx2.png', 'cx2.png']
    # wrong template: the error names the GT file, the expected LQ file and the template
    with pytest.raises(FileNotFoundError) as exc:
        paired_paths_from_folder([str(lq_dir), str(gt_dir)], ['lq', 'gt'], '{}')
    msg = str(exc.value)
    assert str(gt_dir / 'a.png') in msg and str(lq_dir / 'a.png') in msg and 'filename_tmpl' in msg
    assert '3 of 3' in msg and 'ax2.png' in msg


def test_meta_info_file(tmp_path):
    gt_dir, lq_dir = _make_pairs(tmp_path)
    meta = tmp_path / 'meta.txt'
    meta.write_text('c.png (24,32,3)\n\na.png (24,32,3)\n')
    paths = paired_paths_from_meta_info_file([str(lq_dir), str(gt_dir)], ['lq', 'gt'], str(meta), '{}')
    assert paths == [{'lq_path': str(lq_dir / 'c.png'), 'gt_path': str(gt_dir / 'c.png')},
                     {'lq_path': str(lq_dir / 'a.png'), 'gt_path': str(gt_dir / 'a.png')}]
    ds = PairedImageDataset(_paired_opt(gt_dir, lq_dir, meta_info_file=str(meta)))
    assert len(ds) == 2 and ds[0]['gt_path'].endswith('c.png')
    with pytest.raises(FileNotFoundError, match='missing_meta.txt'):
        PairedImageDataset(_paired_opt(gt_dir, lq_dir, meta_info_file=str(tmp_path / 'missing_meta.txt')))


def test_set5_x4_with_filename_tmpl(datasets_dir):
    set5 = datasets_dir / 'Set5'
    ds = build_dataset(_paired_opt(set5 / 'HR', set5 / 'LR_bicubic' / 'X4', scale=4, filename_tmpl='{}x4'))
    assert len(ds) == 5
    for i in range(len(ds)):
        item = ds[i]
        assert os.path.basename(item['lq_path']) == os.path.basename(item['gt_path'])[:-4] + 'x4.png'
        assert item['gt'].shape[-2:] == tuple(4 * s for s in item['lq'].shape[-2:])
        assert item['lq'].dtype == torch.float32 and 0 <= item['lq'].min() and item['lq'].max() <= 1


def test_set14_x3_gt_cropped_and_grayscale(datasets_dir):
    set14 = datasets_dir / 'Set14'
    ds = PairedImageDataset(_paired_opt(set14 / 'HR', set14 / 'LR_bicubic' / 'X3', scale=3, filename_tmpl='{}x3'))
    names = [os.path.basename(p['gt_path']) for p in ds.paths]
    item = ds[names.index('bridge.png')]
    assert item['gt'].shape[0] == 3 and torch.equal(item['gt'][0], item['gt'][1]) and torch.equal(item['gt'][1],
                                                                                                   item['gt'][2])
    for i in range(len(ds)):  # HR sizes that are not multiples of 3 are cropped top-left
        item = ds[i]
        assert item['gt'].shape[-2:] == tuple(3 * s for s in item['lq'].shape[-2:])
    baboon = cv2.imread(str(set14 / 'HR' / 'baboon.png'))
    item = ds[names.index('baboon.png')]
    h, w = item['gt'].shape[-2:]
    np.testing.assert_array_equal(tensor2img(item['gt']), baboon[:h, :w])


# ---------------------------------------------------------------------------------------------
# io backends and lmdb
# ---------------------------------------------------------------------------------------------
def test_file_client_disk_and_errors(tmp_path):
    f = tmp_path / 'x.bin'
    f.write_bytes(b'abc')
    client = FileClient('disk')
    assert client.get(str(f)) == b'abc'
    with pytest.raises(FileNotFoundError, match='missing.png'):
        client.get(str(tmp_path / 'missing.png'))
    with pytest.raises(ValueError, match='memcached.*not supported'):
        FileClient('memcached', server_list_cfg='x', client_cfg='y')
    with pytest.raises(ValueError, match='Unknown io_backend'):
        FileClient('s3')


def test_lmdb_round_trip(tmp_path):
    gt_dir, lq_dir = _make_pairs(tmp_path, names=('p0', 'p1', 'p2', 'p3'), tmpl='{}x2', gray=('p1',))
    gt_lmdb, lq_lmdb = tmp_path / 'gt.lmdb', tmp_path / 'lq.lmdb'
    info = make_paired_lmdb(str(gt_dir), str(lq_dir), str(gt_lmdb), str(lq_lmdb), filename_tmpl='{}x2',
                            progress=False)
    assert info['gt']['num_images'] == 4
    meta = (gt_lmdb / 'meta_info.txt').read_text().splitlines()
    assert meta == ['p0.png (24,32,3) 1', 'p1.png (24,32,1) 1', 'p2.png (24,32,3) 1', 'p3.png (24,32,3) 1']
    assert (lq_lmdb / 'meta_info.txt').read_text().splitlines()[0] == 'p0.png (12,16,3) 1'
    assert paths_from_lmdb(str(gt_lmdb)) == ['p0', 'p1', 'p2', 'p3']
    assert paired_paths_from_lmdb([str(lq_lmdb), str(gt_lmdb)], ['lq', 'gt'])[0] == {'lq_path': 'p0', 'gt_path': 'p0'}
    assert not [n for n in os.listdir(tmp_path) if n.startswith('.')]  # no temporary folder left

    disk = PairedImageDataset(_paired_opt(gt_dir, lq_dir, filename_tmpl='{}x2'))
    lmdb_opt = _paired_opt(gt_lmdb, lq_lmdb, io_backend={'type': 'lmdb'})
    db = build_dataset(lmdb_opt)
    assert len(db) == len(disk) == 4
    for i in range(4):
        a, b = disk[i], db[i]
        assert torch.equal(a['gt'], b['gt']) and torch.equal(a['lq'], b['lq'])
        assert b['gt_path'] == f'p{i}'
    # picklable after use (the open environment is not carried along)
    db2 = pickle.loads(pickle.dumps(db))
    assert torch.equal(db2[2]['gt'], disk[2]['gt'])

    # through DataLoader worker processes: val phase = exact pixels, train phase = aligned crops
    loader = torch.utils.data.DataLoader(db, batch_size=1, num_workers=2)
    for i, batch in enumerate(loader):
        assert torch.equal(batch['gt'][0], disk[i]['gt'])
    train = build_dataset(_paired_opt(gt_lmdb, lq_lmdb, phase='train', io_backend={'type': 'lmdb'}))
    loader = torch.utils.data.DataLoader(train, batch_size=2, num_workers=2, shuffle=True)
    n = 0
    for batch in loader:
        assert batch['gt'].shape == (2, 3, 8, 8) and batch['lq'].shape == (2, 3, 4, 4)
        assert torch.equal(_up_tensor(batch['lq'], 2), batch['gt'])
        n += 2
    assert n == 4

    # spawned workers (macOS/Windows default) get a pickled copy of the dataset
    loader = torch.utils.data.DataLoader(db, batch_size=4, num_workers=1, multiprocessing_context='spawn')
    batch = next(iter(loader))
    assert torch.equal(batch['lq'][3], disk[3]['lq'])

    # errors name the key / the database
    client = FileClient('lmdb', db_paths=[str(gt_lmdb)], client_keys=['gt'])
    with pytest.raises(KeyError) as exc:
        client.get('nokey', 'gt')
    assert 'nokey' in str(exc.value) and str(gt_lmdb) in str(exc.value)
    with pytest.raises(FileExistsError, match='gt.lmdb'):
        make_lmdb_from_folder(str(gt_dir), str(gt_lmdb), progress=False)
    make_lmdb_from_folder(str(lq_dir), str(tmp_path / 'other.lmdb'), progress=False)  # keys p0x2 ...
    with pytest.raises(ValueError, match='differ'):
        paired_paths_from_lmdb([str(tmp_path / 'other.lmdb'), str(gt_lmdb)], ['lq', 'gt'])


def test_create_lmdb_script_and_single_dataset(tmp_path):
    gt_dir, lq_dir = _make_pairs(tmp_path)
    script = runpy.run_path(os.path.join(REPO_ROOT, 'scripts', 'create_lmdb.py'), run_name='create_lmdb')
    out = tmp_path / 'lq.lmdb'
    assert script['main'](['--input', str(lq_dir), '--output', str(out), '--n-thread', '2', '--no-progress']) == 0
    assert script['main'](['--input', str(lq_dir), '--output', str(out), '--no-progress']) == 1  # exists
    assert (out / 'meta_info.txt').read_text().count('\n') == 3

    ds_disk = SingleImageDataset({'dataroot_lq': str(lq_dir), 'io_backend': {'type': 'disk'}})
    ds_lmdb = build_dataset({'type': 'SingleImageDataset', 'dataroot_lq': str(out), 'io_backend': {'type': 'lmdb'}})
    assert len(ds_disk) == len(ds_lmdb) == 3
    for i in range(3):
        assert torch.equal(ds_disk[i]['lq'], ds_lmdb[i]['lq'])
    assert set(ds_disk[0]) == {'lq', 'lq_path'}
    assert ds_disk[0]['lq'].shape == (3, 12, 16)


# ---------------------------------------------------------------------------------------------
# transforms
# ---------------------------------------------------------------------------------------------
def test_mod_crop():
    assert mod_crop(np.zeros((10, 13, 3)), 4).shape == (8, 12, 3)
    assert mod_crop(np.zeros((10, 13)), 3).shape == (9, 12)


@pytest.mark.parametrize('as_tensor', [False, True])
def test_paired_random_crop_alignment(as_tensor):
    scale, gt_size = 4, 16
    lq = _rand_img(20, 30).astype(np.float32) / 255
    gt = _nearest_up(lq, scale)
    random.seed(0)
    positions = set()
    for _ in range(30):
        if as_tensor:
            g, l = paired_random_crop(torch.from_numpy(gt).permute(2, 0, 1), torch.from_numpy(lq).permute(2, 0, 1),
                                      gt_size, scale)
            assert g.shape == (3, 16, 16) and l.shape == (3, 4, 4)
            assert torch.equal(_up_tensor(l, scale), g)
        else:
            g, l = paired_random_crop(gt, lq, gt_size, scale, 'x.png')
            assert g.shape == (16, 16, 3) and l.shape == (4, 4, 3)
            np.testing.assert_array_equal(_nearest_up(l, scale), g)
            g, l = augment([g, l], hflip=True, rotation=True)
            np.testing.assert_array_equal(_nearest_up(l, scale), g)
            positions.add(l[0, 0, 0])
    if not as_tensor:
        assert len(positions) > 5
    # lists in, lists out
    gts, lqs = paired_random_crop([gt, gt], [lq, lq], gt_size, scale)
    assert isinstance(gts, list) and len(lqs) == 2


def test_paired_random_crop_errors():
    lq, gt = np.zeros((10, 10, 3)), np.zeros((30, 40, 3))
    with pytest.raises(ValueError) as exc:
        paired_random_crop(gt, lq, 16, 4, gt_path='some/gt.png')
    msg = str(exc.value)
    assert '(30, 40)' in msg and '(10, 10)' in msg and '4x' in msg and 'some/gt.png' in msg
    with pytest.raises(ValueError, match=r'LQ \(10, 10\) is smaller.*some/gt.png'):
        paired_random_crop(np.zeros((40, 40, 3)), lq, 64, 4, gt_path='some/gt.png')


def test_augment_all_transforms():
    img = np.arange(2 * 3 * 1, dtype=np.float32).reshape(2, 3, 1)
    flow = np.stack([np.ones((2, 3)), 2 * np.ones((2, 3))], axis=-1)
    seen = set()
    random.seed(1)
    for _ in range(100):
        out, fl, (h, v, r) = augment(img, flows=flow, return_status=True)
        seen.add((h, v, r))
        expect = img
        if h:
            expect = expect[:, ::-1]
        if v:
            expect = expect[::-1]
        if r:
            expect = expect.transpose(1, 0, 2)
        np.testing.assert_array_equal(out, expect)
        assert out.flags['C_CONTIGUOUS'] and fl.shape == expect.shape[:2] + (2,)
        dx, dy = (-1 if h else 1), (-2 if v else 2)
        np.testing.assert_array_equal(fl[0, 0], [dy, dx] if r else [dx, dy])
    assert len(seen) == 8
    random.seed(1)
    assert augment(img, hflip=False, rotation=False) is not None
    out = augment([img, img], hflip=False, rotation=False)
    np.testing.assert_array_equal(out[0], img)


def test_train_dataset_crops_aligned_and_seeded(tmp_path):
    gt_dir, lq_dir = _make_pairs(tmp_path, lq_hw=(20, 24))
    ds = PairedImageDataset(_paired_opt(gt_dir, lq_dir, phase='train', gt_size=12))
    random.seed(3)
    first = [ds[i] for i in range(3)]
    for item in first:
        assert item['gt'].shape == (3, 12, 12) and item['lq'].shape == (3, 6, 6)
        assert torch.equal(_up_tensor(item['lq'], 2), item['gt'])
    random.seed(3)
    again = [ds[i] for i in range(3)]
    assert all(torch.equal(a['gt'], b['gt']) for a, b in zip(first, again))


def test_color_y_and_normalize(tmp_path):
    gt_dir, lq_dir = _make_pairs(tmp_path)
    item = PairedImageDataset(_paired_opt(gt_dir, lq_dir, color='y'))[0]
    assert item['lq'].shape == (1, 12, 16) and item['gt'].shape == (1, 24, 32)
    bgr = cv2.imread(str(lq_dir / 'a.png')).astype(np.float64) / 255
    y = (bgr @ [24.966, 128.553, 65.481] + 16) / 255
    np.testing.assert_allclose(item['lq'][0].numpy(), y, atol=1e-5)
    plain = PairedImageDataset(_paired_opt(gt_dir, lq_dir))[0]
    norm = PairedImageDataset(_paired_opt(gt_dir, lq_dir, mean=[0.5, 0.4, 0.3], std=[0.5, 0.5, 0.25]))[0]
    expect = (plain['lq'] - torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1)) / torch.tensor([0.5, 0.5, 0.25]).view(3, 1, 1)
    assert torch.allclose(norm['lq'], expect)


# ---------------------------------------------------------------------------------------------
# image reading, robustness, errors
# ---------------------------------------------------------------------------------------------
def test_grayscale_and_16bit_png(tmp_path):
    gray = _rand_img(9, 7, c=0)
    cv2.imwrite(str(tmp_path / 'g.png'), gray)
    img = imfrombytes((tmp_path / 'g.png').read_bytes())
    assert img.shape == (9, 7, 3) and img.dtype == np.uint8
    assert (img == gray[..., None]).all()
    assert imfrombytes((tmp_path / 'g.png').read_bytes(), flag='grayscale').shape == (9, 7)

    deep = np.random.default_rng(0).integers(0, 65536, (9, 7, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / 'd.png'), deep)
    img = imfrombytes((tmp_path / 'd.png').read_bytes(), float32=True)
    ref = cv2.imread(str(tmp_path / 'd.png'), cv2.IMREAD_COLOR)
    assert ref.dtype == np.uint8
    np.testing.assert_array_equal(img, ref.astype(np.float32) / 255)
    assert imfrombytes((tmp_path / 'd.png').read_bytes(), flag='unchanged').dtype == np.uint16


def _corrupt(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def test_corrupt_image_raises_naming_file(tmp_path):
    gt_dir, lq_dir = _make_pairs(tmp_path)
    _corrupt(gt_dir / 'b.png')
    (lq_dir / 'c.png').write_text('this is not an image')
    ds = PairedImageDataset(_paired_opt(gt_dir, lq_dir))
    ds[0]
    with pytest.raises(ImageReadError) as exc:
        ds[1]
    assert str(gt_dir / 'b.png') in str(exc.value) and 'remove' in str(exc.value)
    with pytest.raises(ImageReadError, match='c.png'):
        ds[2]
    with pytest.raises(ImageReadError, match='empty'):
        imfrombytes(b'', path='e.png')
    assert isinstance(exc.value, OSError)


def test_skip_bad_images_warns(tmp_path, caplog):
    gt_dir, lq_dir = _make_pairs(tmp_path)
    _corrupt(lq_dir / 'b.png')
    ds = PairedImageDataset(_paired_opt(gt_dir, lq_dir, phase='train', skip_bad_images=True))
    random.seed(0)
    with caplog.at_level(logging.WARNING, logger='realsr'):
        items = [ds[1] for _ in range(5)]
    for item in items:
        assert not item['lq_path'].endswith('b.png')
        assert item['gt'].shape == (3, 8, 8)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 5  # one per call: a known-bad pair is not drawn again as the replacement
    assert all(str(lq_dir / 'b.png') in r.getMessage() for r in warnings)


def test_missing_folder_errors(tmp_path):
    gt_dir, lq_dir = _make_pairs(tmp_path)
    with pytest.raises(FileNotFoundError) as exc:
        PairedImageDataset(_paired_opt(gt_dir, tmp_path / 'no_lq'))
    assert str(tmp_path / 'no_lq') in str(exc.value) and 'dataroot_lq' in str(exc.value)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ValueError, match='empty.*contains no images'):
        PairedImageDataset(_paired_opt(tmp_path / 'empty', lq_dir))
    (lq_dir / 'b.png').unlink()
    with pytest.raises(FileNotFoundError) as exc:
        PairedImageDataset(_paired_opt(gt_dir, lq_dir))
    assert str(gt_dir / 'b.png') in str(exc.value) and str(lq_dir / 'b.png') in str(exc.value)
    with pytest.raises(FileNotFoundError, match='no_lq'):
        SingleImageDataset({'dataroot_lq': str(tmp_path / 'no_lq'), 'io_backend': {'type': 'disk'}})


def test_size_mismatch_and_wrong_scale(tmp_path):
    gt_dir, lq_dir = _make_pairs(tmp_path, scale=2)
    # wrong scale: x2 data read as x4 -> GT smaller than LQ*4, at every phase
    for phase in ('val', 'train'):
        ds = PairedImageDataset(_paired_opt(gt_dir, lq_dir, phase=phase, scale=4))
        with pytest.raises(ValueError) as exc:
            ds[0]
        msg = str(exc.value)
        assert str(gt_dir / 'a.png') in msg and str(lq_dir / 'a.png') in msg
        assert '24x32' in msg and '12x16' in msg and 'scale is 4' in msg and 'x2 pair' in msg
    # a GT larger than LQ*scale: cropped at test time, an error for training
    cv2.imwrite(str(gt_dir / 'a.png'), _rand_img(27, 35))
    item = PairedImageDataset(_paired_opt(gt_dir, lq_dir))[0]
    assert item['gt'].shape == (3, 24, 32)
    with pytest.raises(ValueError, match='27x35'):
        PairedImageDataset(_paired_opt(gt_dir, lq_dir, phase='train'))[0]


# ---------------------------------------------------------------------------------------------
# tensor <-> image, imwrite
# ---------------------------------------------------------------------------------------------
def test_tensor_img_round_trip():
    img = _rand_img(5, 6)
    t = img2tensor(img.astype(np.float32) / 255)
    assert t.shape == (3, 5, 6) and t.dtype == torch.float32
    assert torch.equal(t[0], torch.from_numpy(img[..., 2].astype(np.float32) / 255))  # BGR -> RGB
    np.testing.assert_array_equal(tensor2img(t), img)
    np.testing.assert_array_equal(tensor2img(t[None]), img)
    out = tensor2img([t, t], out_type=np.float32)
    assert isinstance(out, list) and out[0].dtype == np.float32 and out[0].max() <= 1
    np.testing.assert_allclose(out[0], img / 255, atol=1e-6)
    # clamping and rounding
    np.testing.assert_array_equal(tensor2img(torch.tensor([[-0.5, 0.5], [1.7, 0.3 / 255]])), [[0, 128], [255, 0]])
    gray = tensor2img(torch.rand(1, 1, 4, 5))
    assert gray.shape == (4, 5)
    assert tensor2img(torch.rand(4, 3, 8, 8)).shape == (2 * 10 + 2, 2 * 10 + 2, 3)  # grid of a batch
    lst = img2tensor([img, img], bgr2rgb=False, float32=False)
    assert lst[0].dtype == torch.uint8 and torch.equal(lst[0][0], torch.from_numpy(img[..., 0]))


def test_imwrite_atomic(tmp_path, monkeypatch):
    img = _rand_img(6, 7)
    target = tmp_path / 'sub' / 'x.png'
    assert imwrite(img, str(target))
    np.testing.assert_array_equal(cv2.imread(str(target)), img)
    assert os.listdir(target.parent) == ['x.png']

    def boom(src, dst):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(os, 'replace', boom)
    with pytest.raises(ImageWriteError, match='x.png'):
        imwrite(np.zeros_like(img), str(target))
    monkeypatch.undo()
    np.testing.assert_array_equal(cv2.imread(str(target)), img)  # the old file is intact
    assert os.listdir(target.parent) == ['x.png']  # and no temporary file is left
    with pytest.raises(ImageWriteError, match='noext'):
        imwrite(img, str(tmp_path / 'noext'))
    with pytest.raises(ImageWriteError, match='bad.jpg'):
        imwrite(np.zeros((4, 4, 5), dtype=np.uint8), str(tmp_path / 'bad.jpg'))
    assert sorted(os.listdir(tmp_path)) == ['sub']


# ---------------------------------------------------------------------------------------------
# default dataset
# ---------------------------------------------------------------------------------------------
def test_default_data(tmp_path):
    root = tmp_path / 'data' / default_data.DEFAULT_DATA_NAME
    res = default_data.prepare_default_data(str(root))
    assert res['prepared'] and res['root'] == str(root) and res['scales'] == [2, 4]
    assert res['val'] == ['chelsea', 'coffee'] and len(res['train']) >= 8
    assert (root / 'README.txt').is_file() and 'scikit-image' in (root / 'README.txt').read_text()
    for split in ('train', 'val'):
        names = sorted(os.listdir(root / split / 'HR'))
        assert names == sorted(f'{n}.png' for n in res[split])
        for name in names:
            hr = cv2.imread(str(root / split / 'HR' / name), cv2.IMREAD_UNCHANGED)
            assert hr.ndim == 3 and hr.shape[2] == 3 and max(hr.shape[:2]) <= 512
            assert hr.shape[0] % 4 == 0 and hr.shape[1] % 4 == 0
            for s in (2, 4):
                lr = cv2.imread(str(root / split / 'LR_bicubic' / f'X{s}' / name), cv2.IMREAD_UNCHANGED)
                assert lr.shape == (hr.shape[0] // s, hr.shape[1] // s, 3)
    ds = PairedImageDataset(_paired_opt(root / 'val' / 'HR', root / 'val' / 'LR_bicubic' / 'X4', scale=4))
    assert len(ds) == 2 and ds[0]['gt'].shape[-2:] == tuple(4 * s for s in ds[0]['lq'].shape[-2:])

    # idempotent: nothing rewritten
    mtime = os.stat(root / 'train' / 'HR' / 'camera.png').st_mtime_ns
    again = default_data.prepare_default_data(str(root))
    assert not again['prepared'] and again['train'] == res['train']
    assert os.stat(root / 'train' / 'HR' / 'camera.png').st_mtime_ns == mtime
    assert not default_data.ensure_default_data(str(root / 'train' / 'LR_bicubic' / 'X4'))
    assert sorted(os.listdir(root.parent)) == [default_data.DEFAULT_DATA_NAME]
    # a folder that is not ours is never touched
    (tmp_path / 'foreign' / default_data.DEFAULT_DATA_NAME).mkdir(parents=True)
    (tmp_path / 'foreign' / default_data.DEFAULT_DATA_NAME / 'mine.txt').write_text('user data')
    with pytest.raises(FileExistsError, match='overwrite=True'):
        default_data.ensure_default_data(str(tmp_path / 'foreign' / default_data.DEFAULT_DATA_NAME / 'train'))
    assert (tmp_path / 'foreign' / default_data.DEFAULT_DATA_NAME / 'mine.txt').read_text() == 'user data'
    assert not default_data.ensure_default_data(str(tmp_path / 'elsewhere' / 'train'))


def test_default_data_failure_leaves_nothing(tmp_path, monkeypatch):
    root = tmp_path / default_data.DEFAULT_DATA_NAME
    calls = []
    real_write = default_data._write_png

    def failing_write(img, path):
        calls.append(path)
        if len(calls) == 7:
            raise KeyboardInterrupt('simulated interruption')
        real_write(img, path)

    monkeypatch.setattr(default_data, '_write_png', failing_write)
    with pytest.raises(KeyboardInterrupt):
        default_data.prepare_default_data(str(root), photos=['astronaut', 'chelsea', 'camera'], val_names=['chelsea'])
    assert os.listdir(tmp_path) == []  # neither the dataset nor a temporary folder
    monkeypatch.undo()

    # the dataset builds itself when a dataset option points into it (subset of photos for speed)
    monkeypatch.setattr(default_data, 'PHOTOS', {k: default_data.PHOTOS[k] for k in ('chelsea', 'coins', 'camera')})
    monkeypatch.setattr(default_data, 'DEFAULT_VAL_NAMES', ('chelsea',))
    ds = build_dataset(_paired_opt(root / 'train' / 'HR', root / 'train' / 'LR_bicubic' / 'X2', phase='train',
                                   gt_size=32))
    assert len(ds) == 2 and ds[0]['gt'].shape == (3, 32, 32)
    assert sorted(os.listdir(root / 'train' / 'LR_bicubic')) == ['X2', 'X4']
    # a scale named in the path is added to our own dataset (rebuilt in place)
    assert default_data.ensure_default_data(str(root / 'val' / 'LR_bicubic' / 'X3'))
    assert sorted(os.listdir(root / 'val' / 'LR_bicubic')) == ['X2', 'X3', 'X4']
    hr = cv2.imread(str(root / 'val' / 'HR' / 'chelsea.png'))
    assert hr.shape[0] % 12 == 0 and hr.shape[1] % 12 == 0
    assert paths_from_folder(str(root / 'val' / 'HR')) == [str(root / 'val' / 'HR' / 'chelsea.png')]
