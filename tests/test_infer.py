"""The inference tool (realsr/infer.py, realsr.engine.inference): tiling, alpha/grayscale/16-bit
round trips, checkpoint key order, --opt, padding for archs that need it, and the error messages."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from realsr.archs import build_network
from realsr.engine import inference
from realsr.utils.tiling import tiled_forward

REPO_ROOT = Path(__file__).resolve().parents[1]
NET_OPT = {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 2}
ARGS = ['--arch', 'MSRResNet', '--net-opt', 'num_feat=8', '--net-opt', 'num_block=1', '--net-opt', 'upscale=2',
        '--device', 'cpu', '--quiet']


def _net(seed=0, **over):
    torch.manual_seed(seed)
    net = build_network({**NET_OPT, **over}).eval()
    # make the weights large enough that every path matters
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return net


def _save(tmp_path, name='net.pth', **keys):
    path = tmp_path / name
    torch.save(keys, path)
    return str(path)


def _model(tmp_path, seed=0):
    net = _net(seed)
    return net, _save(tmp_path, params_ema=net.state_dict())


def _rand_img(h, w, c, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    hi = 256 if dtype == np.uint8 else 65536
    shape = (h, w) if c == 1 else (h, w, c)
    # smooth-ish content so bicubic and the net see something image-like
    img = rng.integers(0, hi, size=shape).astype(dtype)
    return cv2.GaussianBlur(img, (3, 3), 0)


def _run(argv):
    try:
        return inference.main(argv)
    except SystemExit as err:
        return err.code


def test_tiled_equals_untiled_on_an_image_larger_than_the_tile(tmp_path):
    net = _net()
    img = _rand_img(37, 45, 3).astype(np.float32) / 255
    full = inference.upscale_rgb(net, img)
    tiled = inference.upscale_rgb(net, img, tile=16, tile_pad=6)
    assert full.shape == (74, 90, 3)
    np.testing.assert_allclose(tiled, full, atol=1e-5, rtol=0)
    # the same through the command line (files written at 8 bits are equal too)
    cv2.imwrite(str(tmp_path / 'a.png'), (img * 255).round().astype(np.uint8))
    model = _save(tmp_path, params_ema=net.state_dict())
    assert _run(['-i', str(tmp_path / 'a.png'), '-o', str(tmp_path / 'full'), '--model', model] + ARGS) == 0
    assert _run(['-i', str(tmp_path / 'a.png'), '-o', str(tmp_path / 'tiled'), '--model', model, '--tile', '16',
                 '--tile-pad', '6'] + ARGS) == 0
    a = cv2.imread(str(tmp_path / 'full' / 'a_out.png'), cv2.IMREAD_UNCHANGED)
    b = cv2.imread(str(tmp_path / 'tiled' / 'a_out.png'), cv2.IMREAD_UNCHANGED)
    assert a.shape == (74, 90, 3) and np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_rgba_round_trip_bicubic_and_net_alpha(tmp_path):
    net, model = _model(tmp_path)
    img = _rand_img(20, 24, 4)
    cv2.imwrite(str(tmp_path / 'rgba.png'), img)
    assert _run(['-i', str(tmp_path / 'rgba.png'), '-o', str(tmp_path / 'o'), '--model', model] + ARGS) == 0
    out = cv2.imread(str(tmp_path / 'o' / 'rgba_out.png'), cv2.IMREAD_UNCHANGED)
    assert out.shape == (40, 48, 4) and out.dtype == np.uint8
    alpha = np.clip(cv2.resize(img[:, :, 3].astype(np.float32) / 255, (48, 40), interpolation=cv2.INTER_CUBIC), 0, 1)
    np.testing.assert_array_equal(out[:, :, 3], np.round(alpha * 255).astype(np.uint8))
    # colour channels are the network's output on the RGB part
    rgb = inference.upscale_rgb(net, img[:, :, 2::-1].astype(np.float32) / 255)
    np.testing.assert_array_equal(out[:, :, :3], np.round(rgb[:, :, ::-1] * 255).astype(np.uint8))
    # --alpha-upsampler net: the alpha goes through the net as 3 equal channels
    assert _run(['-i', str(tmp_path / 'rgba.png'), '-o', str(tmp_path / 'n'), '--model', model,
                 '--alpha-upsampler', 'net'] + ARGS) == 0
    out_n = cv2.imread(str(tmp_path / 'n' / 'rgba_out.png'), cv2.IMREAD_UNCHANGED)
    a3 = np.repeat(img[:, :, 3:4].astype(np.float32) / 255, 3, axis=2)
    expect = np.round(inference.upscale_rgb(net, a3)[:, :, 1] * 255).astype(np.uint8)
    np.testing.assert_array_equal(out_n[:, :, 3], expect)
    np.testing.assert_array_equal(out_n[:, :, :3], out[:, :, :3])


def test_grayscale_in_grayscale_out(tmp_path):
    net, model = _model(tmp_path)
    img = _rand_img(15, 17, 1)
    cv2.imwrite(str(tmp_path / 'g.png'), img)
    assert _run(['-i', str(tmp_path / 'g.png'), '-o', str(tmp_path / 'o'), '--model', model] + ARGS) == 0
    out = cv2.imread(str(tmp_path / 'o' / 'g_out.png'), cv2.IMREAD_UNCHANGED)
    assert out.shape == (30, 34) and out.dtype == np.uint8
    rgb = inference.upscale_rgb(net, np.repeat(img[:, :, None].astype(np.float32) / 255, 3, axis=2))
    np.testing.assert_array_equal(out, np.round(rgb.mean(axis=2) * 255).astype(np.uint8))


def test_16bit_in_16bit_out(tmp_path):
    net, model = _model(tmp_path)
    img = _rand_img(12, 14, 3, dtype=np.uint16)
    cv2.imwrite(str(tmp_path / 'd.png'), img)
    gray = _rand_img(12, 14, 1, dtype=np.uint16)
    cv2.imwrite(str(tmp_path / 'dg.png'), gray)
    assert _run(['-i', str(tmp_path), '-o', str(tmp_path / 'o'), '--model', model] + ARGS) == 0
    out = cv2.imread(str(tmp_path / 'o' / 'd_out.png'), cv2.IMREAD_UNCHANGED)
    assert out.shape == (24, 28, 3) and out.dtype == np.uint16
    rgb = inference.upscale_rgb(net, img[:, :, ::-1].astype(np.float32) / 65535)
    np.testing.assert_array_equal(out, np.round(rgb[:, :, ::-1] * 65535).astype(np.uint16))
    out_g = cv2.imread(str(tmp_path / 'o' / 'dg_out.png'), cv2.IMREAD_UNCHANGED)
    assert out_g.shape == (24, 28) and out_g.dtype == np.uint16


def test_params_ema_preferred_then_params_then_bare(tmp_path):
    a, b = _net(seed=1), _net(seed=2)
    img = _rand_img(10, 11, 3)
    cv2.imwrite(str(tmp_path / 'x.png'), img)
    x = img[:, :, ::-1].astype(np.float32) / 255
    expect = {name: np.round(inference.upscale_rgb(n, x)[:, :, ::-1] * 255).astype(np.uint8)
              for name, n in (('a', a), ('b', b))}
    cases = [
        (_save(tmp_path, 'both.pth', params=a.state_dict(), params_ema=b.state_dict()), 'b'),
        (_save(tmp_path, 'params.pth', params=a.state_dict()), 'a'),
    ]
    bare = tmp_path / 'bare.pth'
    torch.save(b.state_dict(), bare)
    cases.append((str(bare), 'b'))
    for i, (model, which) in enumerate(cases):
        out_dir = tmp_path / f'o{i}'
        assert _run(['-i', str(tmp_path / 'x.png'), '-o', str(out_dir), '--model', model] + ARGS) == 0
        out = cv2.imread(str(out_dir / 'x_out.png'), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(out, expect[which], err_msg=f'{model} should load net {which}')
    # --param-key params picks the other one
    assert _run(['-i', str(tmp_path / 'x.png'), '-o', str(tmp_path / 'p'), '--model', cases[0][0],
                 '--param-key', 'params'] + ARGS) == 0
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / 'p' / 'x_out.png')), expect['a'])


def test_unreadable_file_among_good_ones_is_reported_and_others_written(tmp_path, capsys):
    _, model = _model(tmp_path)
    src = tmp_path / 'in'
    src.mkdir()
    cv2.imwrite(str(src / 'a.png'), _rand_img(8, 9, 3))
    (src / 'b_broken.png').write_bytes(b'not a png at all')
    cv2.imwrite(str(src / 'c.jpg'), _rand_img(9, 8, 3))
    (src / 'notes.txt').write_text('hello')
    code = _run(['-i', str(src), '-o', str(tmp_path / 'o'), '--model', model, '--suffix', 'x2'] + ARGS)
    assert code == 1
    err = capsys.readouterr()
    assert 'b_broken.png' in err.err and 'Cannot decode image' in err.err
    assert 'notes.txt' in err.err and 'skipping' in err.err
    assert '2 written, 1 failed, 1 skipped' in err.out
    assert sorted(os.listdir(tmp_path / 'o')) == ['a_x2.png', 'c_x2.png']


def test_mismatched_checkpoint_names_missing_and_unexpected_keys(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / 'a.png'), _rand_img(8, 8, 3))
    state = _net().state_dict()
    state['extra.weight'] = torch.zeros(1)
    del state['conv_last.bias']
    model = _save(tmp_path, params_ema=state)
    assert _run(['-i', str(tmp_path / 'a.png'), '-o', str(tmp_path / 'o'), '--model', model] + ARGS) == 2
    err = capsys.readouterr().err
    assert 'missing keys (1): conv_last.bias' in err and 'unexpected keys (1): extra.weight' in err
    assert 'Traceback' not in err
    # a wider net: shapes named
    model = _save(tmp_path, 'wide.pth', params_ema=_net(num_feat=16).state_dict())
    assert _run(['-i', str(tmp_path / 'a.png'), '-o', str(tmp_path / 'o'), '--model', model] + ARGS) == 2
    assert 'shape of conv_first.weight' in capsys.readouterr().err


def test_setup_errors_missing_model_unknown_arch_half_on_cpu(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / 'a.png'), _rand_img(8, 8, 3))
    _, model = _model(tmp_path)
    base = ['-i', str(tmp_path / 'a.png'), '-o', str(tmp_path / 'o')]
    assert _run(base + ['--model', str(tmp_path / 'nope.pth')] + ARGS) == 2
    err = capsys.readouterr().err
    assert 'model file' in err and 'nope.pth' in err and 'does not exist' in err
    assert _run(base + ['--arch', 'MSRResNett', '--model', model, '--device', 'cpu']) == 2
    err = capsys.readouterr().err
    assert 'unknown arch' in err and 'MSRResNet' in err
    if not torch.cuda.is_available():
        assert _run(base + ['--model', model, '--half'] + ARGS) == 2
        assert '--half needs a CUDA device' in capsys.readouterr().err
    assert _run(['-i', str(tmp_path / 'missing_dir'), '-o', str(tmp_path / 'o'), '--model', model] + ARGS) == 2
    assert 'does not exist' in capsys.readouterr().err


def test_opt_file_with_model_override(tmp_path):
    torch.manual_seed(0)
    opt_net = {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 48, 'num_block': 6, 'upscale': 4}
    net = build_network(opt_net).eval()
    model = _save(tmp_path, params_ema=net.state_dict())
    img = _rand_img(9, 10, 3)
    cv2.imwrite(str(tmp_path / 'q.png'), img)
    opt = str(REPO_ROOT / 'options' / 'test' / 'quickstart.yml')
    assert _run(['-i', str(tmp_path / 'q.png'), '-o', str(tmp_path / 'o'), '--opt', opt, '--model', model,
                 '--device', 'cpu', '--quiet']) == 0
    out = cv2.imread(str(tmp_path / 'o' / 'q_out.png'), cv2.IMREAD_UNCHANGED)
    expect = inference.upscale_rgb(net, img[:, :, ::-1].astype(np.float32) / 255)
    np.testing.assert_array_equal(out, np.round(expect[:, :, ::-1] * 255).astype(np.uint8))


def test_pad_multiple_inferred_for_rrdbnet_x2_and_tiling_still_matches():
    torch.manual_seed(0)
    net = build_network({'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'scale': 1, 'num_feat': 8,
                         'num_block': 1, 'num_grow_ch': 4}).eval()
    assert inference.infer_pad_multiple(net) == 4
    img = np.random.default_rng(0).random((13, 18, 3), dtype=np.float32)
    full = inference.upscale_rgb(net, img, pad_multiple=4)
    assert full.shape == (13, 18, 3)
    # equals running the net on the reflect-padded input and cropping
    x = torch.from_numpy(img.transpose(2, 0, 1).copy())[None]
    ref = net(torch.nn.functional.pad(x, (0, 2, 0, 3), mode='reflect'))[:, :, :13, :18].clamp(0, 1)
    np.testing.assert_allclose(full, ref[0].detach().numpy().transpose(1, 2, 0), atol=1e-6)
    # tiles are rounded to the multiple (tile 6 -> 8, pad 3 -> 4); with enough context they agree
    tiled = inference.upscale_rgb(net, img, tile=6, tile_pad=30, pad_multiple=4)
    np.testing.assert_allclose(tiled, full, atol=1e-5)
    assert inference.infer_pad_multiple(_net()) == 1


def test_script_entry_point_runs_from_checkout(tmp_path):
    _, model = _model(tmp_path)
    cv2.imwrite(str(tmp_path / 'a.png'), _rand_img(8, 8, 3))
    proc = subprocess.run([sys.executable, str(REPO_ROOT / 'realsr' / 'infer.py'), '-i', str(tmp_path / 'a.png'),
                           '-o', str(tmp_path / 'o'), '--model', model] + ARGS,
                          capture_output=True, text=True, cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / 'o' / 'a_out.png').is_file() and '1 written' in proc.stdout


def test_tiled_forward_helper_sanity():
    net = _net()
    x = torch.rand(1, 3, 21, 23)
    with torch.no_grad():
        torch.testing.assert_close(tiled_forward(net, x, 8, 6), net(x), atol=1e-5, rtol=0)


def test_pad_multiple_inferred_for_window_archs(tmp_path):
    torch.manual_seed(0)
    opt = {'type': 'SwinIR', 'upscale': 2, 'in_chans': 3, 'img_size': 16, 'window_size': 4, 'embed_dim': 12,
           'depths': [1], 'num_heads': [2], 'mlp_ratio': 2, 'upsampler': 'pixelshuffledirect'}
    net = build_network(opt).eval()
    assert inference.infer_pad_multiple(net) == 4
    model = _save(tmp_path, params_ema=net.state_dict())
    cv2.imwrite(str(tmp_path / 's.png'), _rand_img(13, 18, 3))
    argv = ['-i', str(tmp_path / 's.png'), '-o', str(tmp_path / 'o'), '--model', model, '--arch', 'SwinIR',
            '--device', 'cpu', '--quiet'] + [f'--net-opt={k}={v}' for k, v in opt.items() if k != 'type']
    assert _run(argv) == 0
    assert cv2.imread(str(tmp_path / 'o' / 's_out.png'), cv2.IMREAD_UNCHANGED).shape == (26, 36, 3)
    # without padding the arch refuses the size: reported per file, exit status 1
    assert _run(argv + ['--pad-multiple', '1', '--suffix', 'nopad']) == 1


def test_jpeg_exif_orientation_is_applied(tmp_path):
    from PIL import Image
    _, model = _model(tmp_path)
    img = Image.fromarray(_rand_img(8, 12, 3))  # 8 high, 12 wide
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / 'r.jpg', exif=exif.tobytes(), quality=95)
    assert _run(['-i', str(tmp_path / 'r.jpg'), '-o', str(tmp_path / 'o'), '--model', model] + ARGS) == 0
    assert cv2.imread(str(tmp_path / 'o' / 'r_out.png'), cv2.IMREAD_UNCHANGED).shape == (24, 16, 3)
    gray = Image.fromarray(_rand_img(8, 12, 1))
    gray.save(tmp_path / 'g.jpg', quality=95)
    assert _run(['-i', str(tmp_path / 'g.jpg'), '-o', str(tmp_path / 'o'), '--model', model] + ARGS) == 0
    assert cv2.imread(str(tmp_path / 'o' / 'g_out.png'), cv2.IMREAD_UNCHANGED).shape == (16, 24)


def test_a_folder_of_folders_names_them(tmp_path, capsys):
    """BasicSR's layout (LR_bicubic/X2, X4): -i at the parent finds no image, and says where they are."""
    _, model = _model(tmp_path)
    for sub in ('X2', 'X4'):
        (tmp_path / 'LR_bicubic' / sub).mkdir(parents=True)
    _run(['-i', str(tmp_path / 'LR_bicubic'), '-o', str(tmp_path / 'out'), '--model', model])  # arch detected
    assert 'it has the folders X2, X4: point -i at one of them' in capsys.readouterr().err
