"""Reduced precision in the inference tool, on the CPU (no GPU is needed): --bf16 runs there and
stays close to float32; --half is refused there with a message that says what to do instead.
Tolerances: bf16 keeps 8 significant bits, so each layer rounds at about 2^-9 relative; on these
small random nets (outputs in [0, 1]) the float outputs differ by at most 0.03 and by 0.005 on
average, and the written 8-bit images by at most 8 levels."""
import cv2
import numpy as np
import pytest
import torch

from realsr.archs import build_network
from realsr.engine import inference
from test_infer import ARGS, _model, _rand_img, _run

SWINIR = {'type': 'SwinIR', 'upscale': 2, 'in_chans': 3, 'img_size': 16, 'window_size': 4, 'embed_dim': 12,
          'depths': [1], 'num_heads': [2], 'mlp_ratio': 2, 'upsampler': 'pixelshuffledirect'}
RRDB = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'scale': 2, 'num_feat': 8, 'num_block': 1,
        'num_grow_ch': 4}
SRRESNET = {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'upscale': 4}
SRVGG = {'type': 'SRVGGNetCompact', 'num_feat': 8, 'num_conv': 2, 'upscale': 4, 'act_type': 'prelu'}
HAT = {'type': 'HAT', 'upscale': 2, 'img_size': 16, 'window_size': 8, 'embed_dim': 12, 'depths': [2], 'num_heads': [2],
       'compress_ratio': 3, 'squeeze_factor': 6, 'mlp_ratio': 2, 'upsampler': 'pixelshuffle'}


@pytest.mark.parametrize('net_opt', [SRRESNET, RRDB, SWINIR, SRVGG, HAT], ids=lambda o: o['type'])
def test_bf16_on_cpu_is_close_to_fp32(net_opt):
    torch.manual_seed(0)
    net = build_network(net_opt).eval()
    img = np.random.default_rng(0).random((13, 18, 3), dtype=np.float32)  # odd size: padding is exercised
    m = inference.infer_pad_multiple(net)
    ref = inference.upscale_rgb(net, img, pad_multiple=m)
    device, dtype = inference.resolve_device_dtype('cpu', bf16=True)
    assert (device.type, dtype) == ('cpu', torch.bfloat16)
    low = build_network(net_opt).eval()
    low.load_state_dict(net.state_dict())
    low.to(device=device, dtype=dtype)
    out = inference.upscale_rgb(low, img, device=device, dtype=dtype, pad_multiple=m)
    assert out.dtype == np.float32 and out.shape == ref.shape
    diff = np.abs(out - ref)
    assert 0 < diff.max() < 0.03 and diff.mean() < 0.005  # bf16 did run (not identical), and stays close
    tiled = inference.upscale_rgb(low, img, device=device, dtype=dtype, pad_multiple=m, tile=8, tile_pad=16)
    assert np.abs(tiled - ref).max() < 0.03  # tiles of bf16 (the context covers the whole image)


def test_bf16_on_cpu_through_the_command_line(tmp_path, capsys):
    _, model = _model(tmp_path)
    cv2.imwrite(str(tmp_path / 'a.png'), _rand_img(12, 14, 3))
    base = ['-i', str(tmp_path / 'a.png'), '--model', model] + ARGS
    assert _run(base + ['-o', str(tmp_path / 'fp32')]) == 0
    assert _run(base + ['-o', str(tmp_path / 'bf16'), '--bf16']) == 0
    assert 'cpu bf16' in capsys.readouterr().out
    a = cv2.imread(str(tmp_path / 'fp32' / 'a_out.png'), cv2.IMREAD_UNCHANGED).astype(int)
    b = cv2.imread(str(tmp_path / 'bf16' / 'a_out.png'), cv2.IMREAD_UNCHANGED).astype(int)
    assert a.shape == b.shape == (24, 28, 3)
    assert np.abs(a - b).max() <= 8 and np.abs(a - b).mean() < 1.5


def test_fp16_on_cpu_is_refused_with_the_alternative(tmp_path, capsys):
    _, model = _model(tmp_path)
    cv2.imwrite(str(tmp_path / 'a.png'), _rand_img(8, 8, 3))
    base = ['-i', str(tmp_path / 'a.png'), '-o', str(tmp_path / 'o'), '--model', model] + ARGS
    assert _run(base + ['--half']) == 2
    err = capsys.readouterr().err
    assert '--half needs a CUDA device (running on cpu)' in err and 'use --bf16' in err and 'Traceback' not in err
    assert not (tmp_path / 'o').exists()  # refused before anything is written
    assert _run(base + ['--half', '--bf16']) == 2
    assert '--half and --bf16 exclude each other' in capsys.readouterr().err
    with pytest.raises(inference.InferenceError, match='--bf16 runs on a CUDA device or the CPU, not on meta'):
        inference.resolve_device_dtype('meta', bf16=True)
