"""The data-preparation scripts (extract_subimages, generate_meta_info[_pairdata], generate_multiscale_DF2K)
on tiny DIV2K-like folders: crop positions against hand-computed cases, names, re-runs, meta_info files."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / 'scripts'))
import _prep_util  # noqa: E402
import extract_subimages as es  # noqa: E402
import generate_meta_info as gmi  # noqa: E402
import generate_meta_info_pairdata as gmp  # noqa: E402
import generate_multiscale_DF2K as gms  # noqa: E402
from _prep_util import PrepError  # noqa: E402


def _write(path, h, w, seed, c=3):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, c) if c else (h, w), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return img


@pytest.fixture()
def div2k(tmp_path):
    """DIV2K layout: HR 0001 (50x70) and 0002 (33x41); bicubic-named LR x2 (25x35) and x4 (12x17) of 0001."""
    root = tmp_path / 'DIV2K'
    imgs = {'hr1': _write(root / 'DIV2K_train_HR' / '0001.png', 50, 70, 1),
            'hr2': _write(root / 'DIV2K_train_HR' / '0002.png', 33, 41, 2),
            'x2': _write(root / 'DIV2K_train_LR_bicubic' / 'X2' / '0001x2.png', 25, 35, 3),
            'x4': _write(root / 'DIV2K_train_LR_bicubic' / 'X4' / '0001x4.png', 12, 17, 4)}
    return root, imgs


# --- extract_subimages -------------------------------------------------------------------------------------------
def test_crop_starts_by_hand():
    # 50 rows, crop 20, step 15: 0, 15, 30 fit; 50 - (30 + 20) = 0 left, not > thresh -> nothing appended
    assert es.crop_starts(50, 20, 15, 3) == [0, 15, 30]
    # 70 cols: 0, 15, 30, 45 fit; 70 - 65 = 5 > 3 -> a last crop at 70 - 20 = 50
    assert es.crop_starts(70, 20, 15, 3) == [0, 15, 30, 45, 50]
    assert es.crop_starts(70, 20, 15, 5) == [0, 15, 30, 45]  # 5 left is not > 5
    assert es.crop_starts(33, 20, 15, 3) == [0, 13]
    assert es.crop_starts(41, 20, 15, 3) == [0, 15, 21]
    assert es.crop_starts(19, 20, 15, 0) == []  # smaller than the crop: BasicSR would crash on h_space[-1]
    assert es.crop_starts(20, 20, 15, 0) == [0]


def test_presets_are_basicsr_div2k_values():
    assert es.PRESETS == {'DIV2K_HR': (480, 240, 0), 'DIV2K_LRx2': (240, 120, 0), 'DIV2K_LRx3': (160, 80, 0),
                          'DIV2K_LRx4': (120, 60, 0)}


def test_output_stem_strips_trailing_scale_suffix_only():
    assert [es.output_stem(n) for n in ('0001x2', '0001x3', '0001x4', '0001x8', '0001', 'box2_photo', '0001T0')] == \
        ['0001', '0001', '0001', '0001', '0001', 'box2_photo', '0001T0']


def test_extract_crops_equal_source_slices(div2k, tmp_path):
    root, imgs = div2k
    out = tmp_path / 'HR_sub'
    info = es.extract_subimages(str(root / 'DIV2K_train_HR'), str(out), 20, 15, 3, progress=False)
    assert info == {'images': 2, 'written': 15 + 6, 'kept': 0, 'too_small': []}
    names = sorted(n for n in os.listdir(out) if not n.startswith('.'))
    assert names == [f'0001_s{k:03d}.png' for k in range(1, 16)] + [f'0002_s{k:03d}.png' for k in range(1, 7)]
    # row-major: s001..s005 are the top row (top 0) at lefts 0, 15, 30, 45, 50; s006 starts the row at top 15
    expected_1 = [(t, l) for t in (0, 15, 30) for l in (0, 15, 30, 45, 50)]
    expected_2 = [(0, 0), (0, 15), (0, 21), (13, 0), (13, 15), (13, 21)]
    for key, stem, boxes in (('hr1', '0001', expected_1), ('hr2', '0002', expected_2)):
        for k, (top, left) in enumerate(boxes, start=1):
            crop = cv2.imread(str(out / f'{stem}_s{k:03d}.png'), cv2.IMREAD_UNCHANGED)
            np.testing.assert_array_equal(crop, imgs[key][top:top + 20, left:left + 20])  # PNG is lossless


def test_extract_keeps_gray_and_16bit(tmp_path):
    gray = _write(tmp_path / 'in' / 'g.png', 30, 30, 5, c=0)
    deep = np.random.default_rng(6).integers(0, 65536, (30, 30, 3), dtype=np.uint16)
    cv2.imwrite(str(tmp_path / 'in' / 'd.png'), deep)
    es.extract_subimages(str(tmp_path / 'in'), str(tmp_path / 'out'), 20, 10, 0, progress=False)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / 'out' / 'g_s004.png'), cv2.IMREAD_UNCHANGED),
                                  gray[10:30, 10:30])
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / 'out' / 'd_s002.png'), cv2.IMREAD_UNCHANGED),
                                  deep[0:20, 10:30])


def test_lr_names_drop_scale_suffix_and_pair_with_hr(div2k, tmp_path):
    root, _ = div2k
    es.extract_subimages(str(root / 'DIV2K_train_HR'), str(root / 'DIV2K_train_HR_sub'), 20, 10, 0, progress=False)
    info = es.extract_subimages(str(root / 'DIV2K_train_LR_bicubic' / 'X2'),
                                str(root / 'DIV2K_train_LR_bicubic' / 'X2_sub'), 10, 5, 0, progress=False)
    assert info['written'] == 4 * 6  # 25 rows: 0, 5, 10, 15; 35 cols: 0, 5, ..., 25
    lr_names = sorted(os.listdir(root / 'DIV2K_train_LR_bicubic' / 'X2_sub'))
    assert '0001_s024.png' in lr_names and not any('x2' in n for n in lr_names)
    hr_names = {n for n in os.listdir(root / 'DIV2K_train_HR_sub') if n.startswith('0001_')}
    assert {n for n in lr_names if not n.startswith('.')} == hr_names  # the HR crop grid is the x2 grid, doubled


def test_rerun_resumes_and_refuses_other_settings(div2k, tmp_path):
    root, _ = div2k
    src, out = str(root / 'DIV2K_train_HR'), tmp_path / 'sub'
    es.extract_subimages(src, str(out), 20, 15, 3, progress=False)
    mtime = os.stat(out / '0001_s002.png').st_mtime_ns
    os.remove(out / '0001_s007.png')
    (out / '.0001_s008.png.0123456789ab.tmp').write_bytes(b'half')  # what a kill mid-write leaves
    info = es.extract_subimages(src, str(out), 20, 15, 3, progress=False)
    assert (info['written'], info['kept']) == (1, 20)
    assert os.stat(out / '0001_s002.png').st_mtime_ns == mtime
    assert not (out / '.0001_s008.png.0123456789ab.tmp').exists()
    with pytest.raises(PrepError, match='other settings'):
        es.extract_subimages(src, str(out), 20, 10, 3, progress=False)
    other_input = tmp_path / 'other'
    _write(other_input / '0001.png', 30, 30, 9)  # same name as a sub-image source above: must not count as done
    with pytest.raises(PrepError, match='another input folder'):
        es.extract_subimages(str(other_input), str(out), 20, 15, 3, progress=False)
    foreign = tmp_path / 'foreign'
    _write(foreign / 'x.png', 4, 4, 0)
    with pytest.raises(PrepError, match='not written by this script'):
        es.extract_subimages(src, str(foreign), 20, 15, 3, progress=False)
    assert sorted(os.listdir(foreign)) == ['x.png']


def test_extract_errors_name_the_culprit(tmp_path):
    with pytest.raises(PrepError, match="input folder '.*nowhere' does not exist"):
        es.extract_subimages(str(tmp_path / 'nowhere'), str(tmp_path / 'o'), 20, 10)
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'empty' / 'notes.txt').write_text('x')
    with pytest.raises(PrepError, match='contains no images'):
        es.extract_subimages(str(tmp_path / 'empty'), str(tmp_path / 'o'), 20, 10)
    _write(tmp_path / 'in' / 'good.png', 30, 30, 0)
    (tmp_path / 'in' / 'broken.png').write_bytes(b'\x89PNG not really')
    with pytest.raises(PrepError, match=r"Cannot read image '.*broken\.png'"):
        es.extract_subimages(str(tmp_path / 'in'), str(tmp_path / 'o'), 20, 10, progress=False)
    _write(tmp_path / 'clash' / 'ax2.png', 30, 30, 0)
    _write(tmp_path / 'clash' / 'a.png', 30, 30, 0)
    with pytest.raises(PrepError, match='same name'):
        es.extract_subimages(str(tmp_path / 'clash'), str(tmp_path / 'o2'), 20, 10)
    with pytest.raises(PrepError, match='step must be an integer >= 1'):
        es.extract_subimages(str(tmp_path / 'clash'), str(tmp_path / 'o2'), 20, 0)


def test_image_smaller_than_crop_is_reported(tmp_path):
    _write(tmp_path / 'in' / 'tiny.png', 10, 40, 0)
    _write(tmp_path / 'in' / 'ok.png', 20, 20, 0)
    info = es.extract_subimages(str(tmp_path / 'in'), str(tmp_path / 'out'), 20, 10, progress=False)
    assert info['too_small'] == ['tiny.png'] and info['written'] == 1


def test_cli_preset_div2k_with_pool(tmp_path):
    """The script as users run it: --preset DIV2K on a DIV2K root, two worker processes."""
    root = tmp_path / 'DIV2K'
    hr = _write(root / 'DIV2K_train_HR' / '0001.png', 490, 500, 0)
    _write(root / 'DIV2K_train_HR' / '0002.png', 480, 480, 1)
    lr = _write(root / 'DIV2K_train_LR_bicubic' / 'X4' / '0001x4.png', 122, 125, 2)
    _write(root / 'DIV2K_train_LR_bicubic' / 'X4' / '0002x4.png', 120, 120, 3)
    proc = subprocess.run([sys.executable, str(REPO_ROOT / 'scripts' / 'extract_subimages.py'), '--preset', 'DIV2K',
                           '--input', str(root), '--n_thread', '2'], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for sub, img, size in (('DIV2K_train_HR_sub', hr, 480), ('DIV2K_train_LR_bicubic/X4_sub', lr, 120)):
        names = sorted(n for n in os.listdir(root / sub) if not n.startswith('.'))
        # 0001: one full step does not fit, the leftover (10 or 20 px, 2 or 5 px) > 0 adds a crop flush with the edge
        assert names == ['0001_s001.png', '0001_s002.png', '0001_s003.png', '0001_s004.png', '0002_s001.png']
        last = cv2.imread(str(root / sub / '0001_s004.png'), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(last, img[-size:, -size:])
    assert not (root / 'DIV2K_train_LR_bicubic' / 'X2_sub').exists()  # absent inputs are skipped


def test_cli_refuses_preset_with_explicit_values(capsys):
    with pytest.raises(SystemExit) as exc:
        es.main(['--preset', 'DIV2K_HR', '--input', 'a', '--output', 'b', '--crop_size', '400'])
    assert exc.value.code == 2 and '--crop_size' in capsys.readouterr().err


# --- generate_meta_info --------------------------------------------------------------------------------------------
def test_meta_info_relative_sorted_and_readable_by_dataset(tmp_path):
    from realsr.data.realesrgan_dataset import read_meta_info_paths

    root = tmp_path / 'DF2K'
    for name in ('0002.png', '0001.png', '0010.png'):
        _write(root / 'DF2K_HR' / name, 8, 8, 0)
    for name in ('0001T1.png', '0001T0.png'):
        _write(root / 'DF2K_multiscale' / name, 6, 5, 0)
    (root / 'DF2K_HR' / 'readme.txt').write_text('not an image')
    lines, bad = gmi.meta_info_lines([str(root / 'DF2K_HR'), str(root / 'DF2K_multiscale')], [str(root)] * 2)
    assert lines == ['DF2K_HR/0001.png', 'DF2K_HR/0002.png', 'DF2K_HR/0010.png', 'DF2K_multiscale/0001T0.png',
                     'DF2K_multiscale/0001T1.png'] and bad == []
    meta = tmp_path / 'meta' / 'meta_info.txt'
    assert gmi.main(['--input', str(root / 'DF2K_HR'), str(root / 'DF2K_multiscale'), '--meta_info', str(meta)]) == 0
    assert meta.read_text() == ''.join(line + '\n' for line in lines)  # default root: each input's parent
    assert all(os.path.isfile(p) for p in read_meta_info_paths(str(meta), str(root)))
    basicsr, _ = gmi.meta_info_lines([str(root / 'DF2K_multiscale')], [str(root / 'DF2K_multiscale')], fmt='basicsr',
                                     progress=False)
    assert basicsr == ['0001T0.png (6,5,3)', '0001T1.png (6,5,3)']


def test_meta_info_errors_and_check(tmp_path):
    _write(tmp_path / 'HR' / 'a.png', 4, 4, 0)
    (tmp_path / 'HR' / 'b.png').write_bytes(b'garbage')
    lines, bad = gmi.meta_info_lines([str(tmp_path / 'HR')], check=True, progress=False)
    assert lines == ['HR/a.png'] and bad == [str(tmp_path / 'HR' / 'b.png')]
    with pytest.raises(PrepError, match='one --root per --input'):
        gmi.meta_info_lines([str(tmp_path / 'HR')], [str(tmp_path), str(tmp_path)])
    with pytest.raises(PrepError, match='not inside its root'):
        gmi.meta_info_lines([str(tmp_path / 'HR')], [str(tmp_path / 'elsewhere')])
    _write(tmp_path / 'S' / 'my photo.png', 4, 4, 0)
    with pytest.raises(PrepError, match='my photo.png'):
        gmi.meta_info_lines([str(tmp_path / 'S')])


# --- generate_meta_info_pairdata -----------------------------------------------------------------------------------
def test_pairdata_lines_and_dataset(tmp_path):
    from realsr.data.realesrgan_dataset import RealESRGANPairedDataset

    for stem in ('0002_s001', '0001_s002', '0001_s001'):
        _write(tmp_path / 'DIV2K' / 'HR_sub' / f'{stem}.png', 8, 8, 0)
        _write(tmp_path / 'DIV2K' / 'X2_sub' / f'{stem}.png', 4, 4, 0)
    lines = gmp.pair_lines(str(tmp_path / 'DIV2K' / 'HR_sub'), str(tmp_path / 'DIV2K' / 'X2_sub'))
    assert lines == ['HR_sub/0001_s001.png, X2_sub/0001_s001.png', 'HR_sub/0001_s002.png, X2_sub/0001_s002.png',
                     'HR_sub/0002_s001.png, X2_sub/0002_s001.png']
    meta = tmp_path / 'pair.txt'
    assert gmp.main(['--input', str(tmp_path / 'DIV2K' / 'HR_sub'), str(tmp_path / 'DIV2K' / 'X2_sub'),
                     '--meta_info', str(meta)]) == 0
    dataset = RealESRGANPairedDataset({'name': 'pairs', 'dataroot_gt': str(tmp_path / 'DIV2K'),
                                       'dataroot_lq': str(tmp_path / 'DIV2K'), 'meta_info': str(meta),
                                       'io_backend': {'type': 'disk'}, 'scale': 2, 'phase': 'val'})
    assert len(dataset) == 3
    assert tuple(dataset[0]['gt'].shape) == (3, 8, 8) and tuple(dataset[0]['lq'].shape) == (3, 4, 4)


def test_pairdata_template_and_mismatch_lists_names(tmp_path):
    for stem in ('0001', '0002', '0003'):
        _write(tmp_path / 'HR' / f'{stem}.png', 8, 8, 0)
    for stem in ('0001x4', '0002x4', '0009x4'):
        _write(tmp_path / 'X4' / f'{stem}.png', 2, 2, 0)
    with pytest.raises(PrepError) as err:
        gmp.pair_lines(str(tmp_path / 'HR'), str(tmp_path / 'X4'), filename_tmpl='{}x4')
    assert 'GT images without an LQ image' in str(err.value) and '0003.png' in str(err.value)
    assert 'LQ images without a GT image' in str(err.value) and '0009x4.png' in str(err.value)
    os.remove(tmp_path / 'HR' / '0003.png')
    os.remove(tmp_path / 'X4' / '0009x4.png')
    assert gmp.pair_lines(str(tmp_path / 'HR'), str(tmp_path / 'X4'), filename_tmpl='{}x4') == \
        ['HR/0001.png, X4/0001x4.png', 'HR/0002.png, X4/0002x4.png']


# --- generate_multiscale_DF2K --------------------------------------------------------------------------------------
def test_multiscale_sizes_by_hand():
    # w 70, h 50: 52.5 x 37.5, 35 x 25, 23.3 x 16.7 truncated; T3: h -> 400, w = int(400 * 1.4) = 560
    assert gms.multiscale_sizes(70, 50) == [(52, 37), (35, 25), (23, 16), (560, 400)]
    # portrait w 33, h 41: T3 w -> 400, h = int(400 * 41 / 33) = int(496.97) = 496
    assert gms.multiscale_sizes(33, 41) == [(24, 30), (16, 20), (11, 13), (400, 496)]
    assert gms.multiscale_sizes(600, 600)[3] == (400, 400)


def test_multiscale_files_and_rerun(tmp_path):
    from PIL import Image

    _write(tmp_path / 'HR' / '0001.png', 50, 70, 0)
    _write(tmp_path / 'HR' / '0002.png', 41, 33, 1)
    out = tmp_path / 'multiscale'
    assert gms.generate_multiscale(str(tmp_path / 'HR'), str(out), progress=False) == {'images': 2, 'written': 8}
    assert sorted(os.listdir(out)) == [f'000{i}T{k}.png' for i in (1, 2) for k in range(4)]
    src = Image.open(tmp_path / 'HR' / '0001.png')
    for k, size in enumerate(gms.multiscale_sizes(70, 50)):
        with Image.open(out / f'0001T{k}.png') as img:
            assert img.size == size
            # same PIL call on the same pixels in this process: identical bytes expected
            expected = src.resize(size, resample=Image.Resampling.LANCZOS)
            np.testing.assert_array_equal(np.asarray(img), np.asarray(expected))
    os.remove(out / '0002T2.png')
    assert gms.generate_multiscale(str(tmp_path / 'HR'), str(out), progress=False) == {'images': 2, 'written': 1}
    (tmp_path / 'HR' / '0003.png').write_bytes(b'nope')
    with pytest.raises(PrepError, match=r"Cannot read image '.*0003\.png'"):
        gms.generate_multiscale(str(tmp_path / 'HR'), str(out), progress=False)


# --- shared helper ------------------------------------------------------------------------------------------------
def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / 'meta.txt'
    _prep_util.write_lines_atomic(target, ['old'])

    def broken_replace(src, dst):
        raise OSError('disk full')

    monkeypatch.setattr(_prep_util.os, 'replace', broken_replace)
    with pytest.raises(OSError, match='disk full'):
        _prep_util.write_lines_atomic(target, ['new'])
    assert target.read_text() == 'old\n' and os.listdir(tmp_path) == ['meta.txt']


# --- docs/data.md ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize('option_file', ['train_ReflashDropout_SRResNet_x4.yml', 'train_MSRResNet_x4.yml',
                                         'train_RealESRNet_x4plus.yml', 'train_RealESRGAN_x4plus.yml'])
def test_data_doc_writes_the_paths_the_recipes_read(option_file):
    """docs/data.md's commands must produce exactly the folders and meta_info files these option files read."""
    from realsr.utils.yaml_util import yaml_load

    doc = (REPO_ROOT / 'docs' / 'data.md').read_text(encoding='utf-8')
    train = yaml_load(REPO_ROOT / 'options' / 'train' / option_file)['datasets']['train']
    assert option_file in doc
    for key in ('dataroot_gt', 'dataroot_lq', 'meta_info'):
        if train.get(key):
            assert train[key] in doc, f'{option_file} reads {key}: {train[key]}, which docs/data.md never makes'
