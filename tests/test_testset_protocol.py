"""The papers' degraded benchmark sets: byte identity with the reference script's output, the noise
variant's statistics and seeding, the CLI, and its error messages."""
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realsr.degradations import testset_protocol as tp

REPO_ROOT = Path(__file__).resolve().parents[1]


def _load_cli():
    spec = importlib.util.spec_from_file_location('make_degraded_testsets',
                                                  REPO_ROOT / 'scripts' / 'make_degraded_testsets.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope='module')
def cli():
    return _load_cli()


@pytest.fixture(scope='module')
def oracle_manifest(oracle_dir):
    path = oracle_dir / 'testset_protocol' / 'manifest.json'
    if not path.exists():
        pytest.skip(f'{path} is absent')
    return json.loads(path.read_text())


def _flat(value, size=(256, 256), mode='RGB'):
    shape = (size[1], size[0], 3) if mode == 'RGB' else (size[1], size[0])
    return Image.fromarray(np.full(shape, value, np.uint8), mode)


# ---------------------------------------------------------------------------------------- identity

@pytest.mark.parametrize('set_name', ['Set5', 'Set14'])
def test_deterministic_variants_byte_identical_to_reference(set_name, oracle_manifest, datasets_dir):
    entries = [f for f in oracle_manifest['files'] if f['file'].startswith(set_name + '/')]
    assert entries, f'no {set_name} entry in the oracle manifest'
    checked = 0
    for entry in entries:
        _, variant, _ = entry['file'].split('/')
        assert variant in tp.DETERMINISTIC_VARIANTS
        hr_path = datasets_dir / entry['source_hr']
        if not hr_path.exists():
            pytest.skip(f'{hr_path} is absent')
        hr = tp.load_hr(hr_path)
        assert hr.mode == entry['hr_mode'] and list(hr.size) == entry['hr_size_wh']
        lr = tp.degrade(hr, variant, scale=4)
        assert lr.mode == entry['out_mode'], entry['file']
        assert list(lr.size) == entry['out_size_wh'], entry['file']
        assert tp.pixel_sha256(lr) == entry['sha256_of_pixels'], entry['file']
        checked += 1
    assert checked == (20 if set_name == 'Set5' else 4)


def test_grayscale_path(datasets_dir):
    """bridge.png (mode L): blur/bicubic/noise stay L, JPEG comes back as RGB with equal channels."""
    path = datasets_dir / 'Set14' / 'HR' / 'bridge.png'
    if not path.exists():
        pytest.skip(f'{path} is absent')
    hr = tp.load_hr(path)
    assert hr.mode == 'L'
    rng = tp.noise_rng(0, 'blur2_bicubic_noise20', 'bridge.png')
    assert tp.degrade(hr, 'blur2_bicubic_noise20', rng=rng).mode == 'L'
    rng = tp.noise_rng(0, 'bicubic_noise20_jepg50', 'bridge.png')
    out = np.array(tp.degrade(hr, 'bicubic_noise20_jepg50', rng=rng))
    assert out.ndim == 3 and out.shape[2] == 3
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


# ------------------------------------------------------------------------------------------ noise

def test_noise_truncates_and_has_sigma_20():
    img = _flat(128)
    out = np.array(tp.add_noise(img, 20, np.random.default_rng(5))).astype(np.float64)
    # the exact formula: trunc(clip(clip(x/255 + n, 0, 1) * 255)) with n drawn from the same stream
    n = np.random.default_rng(5).standard_normal(out.shape) * (20 / 255)
    expected = np.clip(np.clip(128 / 255 + n, 0, 1) * 255, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    # rounding would differ somewhere: truncation it is
    rounded = np.clip(np.round(np.clip(128 / 255 + n, 0, 1) * 255), 0, 255).astype(np.uint8)
    assert (rounded != expected).mean() > 0.4
    # statistics: per-pixel-per-channel noise, std 20 DN, truncation bias -0.5 DN
    resid = out - 128
    assert abs(resid.mean() + 0.5) < 0.1
    assert abs(resid.std() - np.sqrt(20 ** 2 + 1 / 12)) < 0.3
    # independent per channel (colour noise)
    corr = np.corrcoef(resid[..., 0].ravel(), resid[..., 1].ravel())[0, 1]
    assert abs(corr) < 0.02


def test_noise_clips_at_the_range_ends():
    dark = np.array(tp.add_noise(_flat(0, (64, 64)), 20, np.random.default_rng(1)))
    bright = np.array(tp.add_noise(_flat(255, (64, 64)), 20, np.random.default_rng(1)))
    assert dark.min() == 0 and (dark == 0).mean() > 0.45
    assert bright.max() == 255 and (bright == 255).mean() > 0.45


def test_noise_grayscale_single_channel():
    out = tp.add_noise(_flat(100, mode='L'), 20, np.random.default_rng(0))
    assert out.mode == 'L' and np.array(out).ndim == 2
    assert abs(np.array(out).astype(float).std() - 20) < 0.5


def test_noise_seeded_reproducible_and_independent():
    hr = _flat(128, (128, 128))
    a = tp.degrade(hr, 'bicubic_noise20', rng=tp.noise_rng(3, 'bicubic_noise20', 'x.png'))
    b = tp.degrade(hr, 'bicubic_noise20', rng=tp.noise_rng(3, 'bicubic_noise20', 'x.png'))
    c = tp.degrade(hr, 'bicubic_noise20', rng=tp.noise_rng(4, 'bicubic_noise20', 'x.png'))
    d = tp.degrade(hr, 'bicubic_noise20', rng=tp.noise_rng(3, 'bicubic_noise20', 'y.png'))
    e = tp.degrade(hr, 'blur2_bicubic_noise20', rng=tp.noise_rng(3, 'blur2_bicubic_noise20', 'x.png'))
    assert tp.pixel_sha256(a) == tp.pixel_sha256(b)
    assert len({tp.pixel_sha256(x) for x in (a, c, d, e)}) == 4
    with pytest.raises(tp.TestsetError, match='rng'):
        tp.degrade(hr, 'bicubic_noise20')


def test_noise_sigma_table_and_legacy40():
    assert tp.noise_sigma_for('bicubic') is None
    assert all(tp.noise_sigma_for(v) == 20 for v in tp.VARIANTS if 'noise' in v)
    assert tp.noise_sigma_for('bicubic_noise20', legacy_noise40=True) == 40
    # only bicubic_noise20 had the sigma-40 history
    assert tp.noise_sigma_for('blur2_bicubic_noise20', legacy_noise40=True) == 20
    assert tp.noise_sigma_for('bicubic_noise20_jepg50', legacy_noise40=True) == 20


def test_variant_order_of_operations():
    """noise before JPEG: the JPEG of the noisy LR equals the _jepg50 variant with the same rng."""
    rng_hr = np.random.default_rng(0)
    hr = Image.fromarray(rng_hr.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    blur_lr = tp.bicubic_down(tp.blur2(hr))
    noisy = tp.add_noise(blur_lr, 20, np.random.default_rng(9))
    expect = tp.jpeg_compress(noisy)
    got = tp.degrade(hr, 'blur2_bicubic_noise20_jepg50', rng=np.random.default_rng(9))
    assert tp.pixel_sha256(got) == tp.pixel_sha256(expect)
    assert [tp.parse_variant(v) for v in tp.VARIANTS[:4]] == [
        {'blur': False, 'noise': False, 'jpeg': False}, {'blur': True, 'noise': False, 'jpeg': False},
        {'blur': False, 'noise': True, 'jpeg': False}, {'blur': False, 'noise': False, 'jpeg': True}]
    with pytest.raises(tp.TestsetError, match='unknown degradation variant'):
        tp.parse_variant('bicubic_jpeg50')


# -------------------------------------------------------------------------------------------- CLI

@pytest.fixture()
def two_set5(tmp_path, datasets_dir):
    src = datasets_dir / 'Set5' / 'HR'
    hr = tmp_path / 'HR'
    hr.mkdir()
    for name in ('bird.png', 'woman.png'):
        if not (src / name).exists():
            pytest.skip(f'{src / name} is absent')
        shutil.copy(src / name, hr / name)
    return hr


def test_cli_writes_eight_folders(cli, two_set5, tmp_path, oracle_manifest):
    out = tmp_path / 'out'
    assert cli.main(['--hr', str(two_set5), '--out', str(out), '--seed', '7']) == 0
    for v in tp.VARIANTS:
        assert sorted(p.name for p in (out / v).iterdir()) == ['bird.png', 'woman.png']
    manifest = json.loads((out / tp.MANIFEST_NAME).read_text())
    assert manifest['seed'] == 7 and manifest['variants'] == list(tp.VARIANTS)
    assert manifest['noise_sigma'] == {v: 20 for v in tp.VARIANTS if 'noise' in v}
    assert '--seed 7' in (out / tp.README_NAME).read_text()
    # written files decode to the reference pixels
    ref = {f['file']: f for f in oracle_manifest['files']}
    for v in tp.DETERMINISTIC_VARIANTS:
        for name in ('bird.png', 'woman.png'):
            entry = ref[f'Set5/{v}/{name}']
            with Image.open(out / v / name) as im:
                assert im.mode == entry['out_mode'] and list(im.size) == entry['out_size_wh']
                assert tp.pixel_sha256(im) == entry['sha256_of_pixels']
    # the same seed reproduces the noisy files; the sizes are the reference's int(w/4)
    out2 = tmp_path / 'out2'
    assert cli.main(['--hr', str(two_set5), '--out', str(out2), '--seed', '7',
                     '--variants', 'bicubic_noise20']) == 0
    for name in ('bird.png', 'woman.png'):
        with Image.open(out / 'bicubic_noise20' / name) as a, Image.open(out2 / 'bicubic_noise20' / name) as b:
            assert tp.pixel_sha256(a) == tp.pixel_sha256(b)
    assert not (out2 / 'bicubic').exists()


def test_cli_legacy_noise40(cli, tmp_path):
    hr = tmp_path / 'HR'
    hr.mkdir()
    _flat(128, (256, 256)).save(hr / 'flat.png')
    out = tmp_path / 'out'
    assert cli.main(['--hr', str(hr), '--out', str(out), '--legacy-noise40',
                     '--variants', 'bicubic_noise20', 'blur2_bicubic_noise20']) == 0
    manifest = json.loads((out / tp.MANIFEST_NAME).read_text())
    assert manifest['legacy_noise40'] is True
    assert manifest['noise_sigma'] == {'bicubic_noise20': 40, 'blur2_bicubic_noise20': 20}
    for v, sigma in (('bicubic_noise20', 40), ('blur2_bicubic_noise20', 20)):
        with Image.open(out / v / 'flat.png') as im:
            resid = np.array(im).astype(float) - 128
        assert abs(resid.std() - sigma) < 0.06 * sigma, v


def test_cli_missing_hr_folder(cli, tmp_path, capsys):
    missing = tmp_path / 'nope'
    assert cli.main(['--hr', str(missing), '--out', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert 'does not exist' in err and str(missing) in err
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert cli.main(['--hr', str(empty), '--out', str(tmp_path / 'out')]) == 2
    assert 'has no image file' in capsys.readouterr().err


def test_cli_unreadable_image_is_named(cli, tmp_path, capsys):
    hr = tmp_path / 'HR'
    hr.mkdir()
    _flat(10, (32, 32)).save(hr / 'a.png')
    (hr / 'broken.png').write_bytes(b'not a png at all')
    assert cli.main(['--hr', str(hr), '--out', str(tmp_path / 'out')]) == 2
    err = capsys.readouterr().err
    assert 'cannot read HR image' in err and 'broken.png' in err


def test_cli_size_not_divisible_follows_reference(cli, tmp_path, capsys):
    hr = tmp_path / 'HR'
    hr.mkdir()
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (50, 83, 3), dtype=np.uint8))  # w=83, h=50
    img.save(hr / 'odd.png')
    out = tmp_path / 'out'
    assert cli.main(['--hr', str(hr), '--out', str(out), '--variants', 'bicubic', 'blur2_bicubic_jepg50']) == 0
    err = capsys.readouterr().err
    assert 'odd.png' in err and 'not divisible by scale 4' in err and '20x12' in err
    with Image.open(out / 'bicubic' / 'odd.png') as im:
        assert im.size == (20, 12)  # int(83/4), int(50/4): no crop, plain resize
        np.testing.assert_array_equal(np.array(im), np.array(img.resize((20, 12), Image.BICUBIC)))
    manifest = json.loads((out / tp.MANIFEST_NAME).read_text())
    assert any('not divisible' in n for n in manifest['files'][0]['notes'])
    # an image smaller than the scale cannot be downscaled: the error names it
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(hr / 'tiny.png')
    assert cli.main(['--hr', str(hr), '--out', str(out), '--variants', 'bicubic']) == 2
    err = capsys.readouterr().err
    assert 'tiny.png' in err and 'too small for scale 4' in err


def test_other_modes_are_converted(tmp_path):
    rgba = Image.fromarray(np.full((16, 16, 4), 200, np.uint8), 'RGBA')
    img, note = tp.normalize_mode(rgba)
    assert img.mode == 'RGB' and 'RGBA' in note
    g16 = Image.fromarray(np.full((16, 16), 65535, np.uint16))
    img, note = tp.normalize_mode(g16)
    assert img.mode == 'L' and np.array(img).max() == 255
    assert tp.normalize_mode(_flat(1, (4, 4)))[1] is None
    assert tp.output_name(Path('x/photo.JPG')) == 'photo.png'
    assert tp.output_name(Path('x/photo.png')) == 'photo.png'
    hr = tmp_path / 'HR'
    hr.mkdir()
    _flat(1, (8, 8)).save(hr / 'a.png')
    _flat(1, (8, 8)).save(hr / 'a.jpg')
    with pytest.raises(tp.TestsetError, match="both be written as 'a.png'"):
        tp.make_testsets(hr, tmp_path / 'out', variants=['bicubic'])
