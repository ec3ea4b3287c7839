"""Loading a checkpoint without naming its arch: realsr's detectors (key layouts and shapes, then
a build that must match every key and shape), spandrel for archs realsr lacks, and the error that
lists what was tried. Networks are tiny and random: detection reads shapes, never values."""
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from realsr.archs import build_network
from realsr.archs.detect import ArchNotDetected, detect_arch
from realsr.engine import auto_model
from realsr.runtime import checkpoint, model_files

from conftest import REPO_ROOT
from test_archs import _import_spandrel  # torchvision stub for importing spandrel on CPU-only torch

INFER_PY = str(REPO_ROOT / 'realsr' / 'infer.py')

# our archs with non-default arguments: detection must give back exactly these
OWN = [
    {'type': 'MSRResNet', 'num_feat': 16, 'num_block': 3, 'upscale': 3},
    {'type': 'MSRResNet_details', 'num_feat': 8, 'num_block': 2, 'upscale': 2},
    {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 2, 'num_grow_ch': 4, 'scale': 2},
    {'type': 'RRDBNet', 'num_in_ch': 1, 'num_out_ch': 1, 'num_feat': 8, 'num_block': 1, 'num_grow_ch': 4, 'scale': 1},
    {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 3, 'num_grow_ch': 4, 'scale': 4},
    {'type': 'SwinIR', 'upscale': 2, 'img_size': 16, 'window_size': 4, 'embed_dim': 12, 'depths': [2, 1],
     'num_heads': [2, 3], 'upsampler': 'pixelshuffle', 'mlp_ratio': 2.0, 'resi_connection': '3conv'},
    {'type': 'SwinIR', 'upscale': 3, 'img_size': 24, 'window_size': 4, 'embed_dim': 12, 'depths': [2],
     'num_heads': [2], 'upsampler': 'pixelshuffledirect'},
    {'type': 'SwinIR', 'upscale': 4, 'img_size': 16, 'window_size': 4, 'embed_dim': 12, 'depths': [2],
     'num_heads': [2], 'upsampler': 'nearest+conv'},
    {'type': 'DRCT', 'upscale': 2, 'img_size': 16, 'window_size': 4, 'embed_dim': 12, 'depths': [6, 6],
     'num_heads': [2, 3], 'gc': 8, 'upsampler': 'pixelshuffle', 'mlp_ratio': 2.0},
    {'type': 'MSRResNetDynamicCDDNet', 'num_feat': 8, 'num_block': 2, 'num_models': 3, 'upscale': 2},
    {'type': 'MSRResNetDynamicDASR', 'num_feat': 8, 'num_block': 1, 'num_models': 4, 'upscale': 4},
    {'type': 'SRVGGNetCompact', 'num_feat': 8, 'num_conv': 3, 'upscale': 4, 'act_type': 'prelu'},
    {'type': 'HAT', 'upscale': 2, 'img_size': 64, 'window_size': 4, 'embed_dim': 12, 'depths': [2, 1],
     'num_heads': [2, 3], 'upsampler': 'pixelshuffle', 'mlp_ratio': 2.0, 'squeeze_factor': 4, 'compress_ratio': 2},
    {'type': 'HAT', 'upscale': 3, 'img_size': 64, 'window_size': 4, 'embed_dim': 12, 'depths': [1],
     'num_heads': [2], 'upsampler': 'pixelshuffle', 'squeeze_factor': 4, 'compress_ratio': 2,
     'resi_connection': 'identity'},
]


def _randomize_(net, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return net.eval()


@pytest.mark.parametrize('opt', OWN, ids=lambda o: o['type'] + '-' + str(o.get('upscale', o.get('scale'))))
def test_own_archs_are_detected_with_their_arguments(opt):
    net = build_network(dict(opt))
    type_name, kwargs = detect_arch(net.state_dict())
    assert type_name == opt['type']
    for key, value in opt.items():
        if key != 'type':
            assert kwargs[key] == value, (key, kwargs)


def test_unknown_state_dict_lists_what_was_tried():
    with pytest.raises(ArchNotDetected) as err:
        detect_arch({'encoder.0.weight': torch.zeros(4, 3, 3, 3)}, 'mystery.pth')
    text = str(err.value)
    assert 'mystery.pth' in text
    for family in ('MSRResNet', 'RRDBNet', 'SwinIR', 'DRCT', 'HAT', 'MSRResNetDynamic', 'SRVGGNetCompact'):
        assert f'  - {family}' in text
    # a near miss names the difference: a SwinIR whose keys were cut
    sd = build_network(dict(OWN[5])).state_dict()
    sd.pop('conv_last.weight')
    with pytest.raises(ArchNotDetected, match=r'SwinIR with .* differs: 1 missing key\(s\), e.g. conv_last.weight'):
        detect_arch(sd)


def test_spandrel_made_checkpoints_are_detected_and_give_the_same_outputs(tmp_path):
    _import_spandrel()
    from spandrel.architectures.SwinIR.__arch import SwinIR as spandrel_swinir
    from spandrel.architectures.Compact.__arch.SRVGG import SRVGGNetCompact as SpandrelCompact
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    made = {
        'SwinIR': _randomize_(spandrel_swinir.SwinIR(img_size=16, window_size=4, embed_dim=12, depths=[2, 2],
                                                     num_heads=[2, 2], mlp_ratio=2.0, upscale=2,
                                                     upsampler='pixelshuffle', resi_connection='1conv'), 1),
        'SRVGGNetCompact': _randomize_(SpandrelCompact(num_feat=8, num_conv=4, upscale=3, act_type='prelu'), 2),
    }
    for name, ref in made.items():
        path = tmp_path / f'{name}.pth'
        torch.save({'params_ema': ref.state_dict()}, path)
        net, net_opt, how = auto_model.load_auto(str(path))
        assert net_opt['type'] == name and how == 'detected from the state dict'
        with torch.no_grad():
            # both sides pad to the window themselves (spandrel always; ours with pad_mode reflect)
            if name == 'SwinIR':
                net.pad_mode = 'reflect'
            # different attention kernels (our SDPA vs spandrel's explicit softmax) on a tiny net:
            # float32 rounding differences of a few 1e-7, far below 1e-5
            torch.testing.assert_close(net(x), ref(x), atol=1e-5, rtol=0)


def test_safetensors_metadata_names_the_arch(tmp_path):
    opt = dict(OWN[0])
    net = _randomize_(build_network(dict(opt)), 3)
    path = tmp_path / 'net_g_10.safetensors'
    checkpoint.save_network(net, str(path), 'params', metadata=model_files.arch_metadata(opt, 10))
    loaded, net_opt, how = auto_model.load_auto(str(path))
    assert how == 'safetensors metadata' and net_opt == opt
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))  # same weights, same code, same process


def _run_infer(args, cwd):
    return subprocess.run([sys.executable, INFER_PY, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _image(path, size=(20, 16)):
    rng = np.random.default_rng(0)
    cv2.imwrite(str(path), rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    return path


def test_infer_model_without_arch_runs_spandrel_for_an_arch_realsr_lacks(tmp_path, capsys):
    _import_spandrel()  # in this process: where torchvision is broken the stubbed import is the one cached
    from spandrel.architectures.SPAN.__arch import span
    from realsr.engine.inference import main
    ref = _randomize_(span.SPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2), 4)
    model = tmp_path / 'span_x2.pth'
    torch.save({'params': ref.state_dict()}, model)
    img = _image(tmp_path / 'in.png')
    assert main(['-i', str(img), '-o', str(tmp_path / 'out'), '--model', str(model), '--device', 'cpu',
                 '--quiet']) == 0
    captured = capsys.readouterr()
    assert 'SPAN via spandrel' in captured.err and '(SPAN, cpu fp32' in captured.out
    out = cv2.imread(str(tmp_path / 'out' / 'in_out.png'))
    x = torch.from_numpy(cv2.imread(str(img))[:, :, ::-1].astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = ref(x.contiguous()).clamp(0, 1)[0].permute(1, 2, 0).numpy()[:, :, ::-1] * 255
    assert out.shape == (32, 40, 3)
    assert np.abs(out.astype(np.float64) - expected).max() <= 1.0  # within one 8-bit level (rounding)


def test_infer_model_without_arch_detects_and_reads_safetensors(tmp_path):
    opt = dict(OWN[2])  # RRDBNet x2: pixel-unshuffle, so the odd-sized input is padded
    net = _randomize_(build_network(dict(opt)), 5)
    img = _image(tmp_path / 'in.png', size=(11, 9))
    outs = {}
    for name in ('net.pth', 'net.safetensors'):
        checkpoint.save_network(net, str(tmp_path / name), 'params_ema', metadata=model_files.arch_metadata(opt, 1))
        done = _run_infer(['-i', str(img), '-o', str(tmp_path / f'out_{name}'), '--model', str(tmp_path / name),
                           '--device', 'cpu', '--quiet'], tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        assert 'RRDBNet(' in done.stderr
        outs[name] = cv2.imread(str(tmp_path / f'out_{name}' / 'in_out.png'))
    assert outs['net.pth'].shape == (18, 22, 3)
    assert np.array_equal(outs['net.pth'], outs['net.safetensors'])  # same weights, same code path


def test_infer_unknown_checkpoint_exits_2_with_the_list(tmp_path):
    model = tmp_path / 'odd.pth'
    torch.save({'whatever.weight': torch.zeros(2, 2)}, model)
    img = _image(tmp_path / 'in.png')
    done = _run_infer(['-i', str(img), '-o', str(tmp_path / 'out'), '--model', str(model)], tmp_path)
    assert done.returncode == 2
    assert 'no known arch matches' in done.stderr and '- RRDBNet:' in done.stderr and '- spandrel:' in done.stderr


@pytest.mark.parametrize('arch', ['Compact', 'HAT'])
def test_infer_model_without_arch_reproduces_spandrel_outputs(tmp_path, capsys, arch):
    """The issue's check: a Real-ESRGAN SRVGGNetCompact and a HAT checkpoint made by the reference
    code's classes (spandrel's ports, random weights) run through ``realsr-infer --model`` alone on
    realsr's own archs, within one 8-bit level of the reference outputs."""
    _import_spandrel()
    from realsr.engine.inference import main
    if arch == 'Compact':
        from spandrel.architectures.Compact import Compact
        ref, expected_type = Compact(num_feat=8, num_conv=3, upscale=4, act_type='prelu'), 'SRVGGNetCompact('
    else:
        from spandrel.architectures.HAT import HAT
        ref = HAT(upscale=2, img_size=16, window_size=4, embed_dim=12, depths=[2], num_heads=[2], compress_ratio=2,
                  squeeze_factor=4, overlap_ratio=0.5, mlp_ratio=2, upsampler='pixelshuffle', resi_connection='1conv')
        expected_type = 'HAT('
    ref = _randomize_(ref, 6)
    model = tmp_path / f'{arch}.pth'
    torch.save({'params_ema': ref.state_dict()}, model)
    img = _image(tmp_path / 'in.png', size=(15, 10))  # not a window multiple: padded and cropped
    assert main(['-i', str(img), '-o', str(tmp_path / 'out'), '--model', str(model), '--device', 'cpu',
                 '--quiet']) == 0
    assert expected_type in capsys.readouterr().err  # realsr's own arch, not spandrel's
    out = cv2.imread(str(tmp_path / 'out' / 'in_out.png')).astype(np.float64)
    x = torch.from_numpy(np.ascontiguousarray(cv2.imread(str(img))[:, :, ::-1]).astype(np.float32) / 255)
    with torch.no_grad():  # spandrel's HAT pads to the window itself (reflect, bottom/right), as realsr does
        expected = ref(x.permute(2, 0, 1)[None]).clamp(0, 1)[0].permute(1, 2, 0).numpy()[:, :, ::-1] * 255
    assert out.shape == expected.shape
    assert np.abs(out - expected).max() <= 1.0  # rounding to 8 bits: at most one level apart


def test_infer_output_that_is_a_file_is_a_setup_error(tmp_path, capsys):
    from realsr.engine.inference import main
    net = _randomize_(build_network(dict(OWN[0])), 7)
    checkpoint.save_network(net, str(tmp_path / 'net.pth'), 'params')
    (tmp_path / 'taken').write_text('a file, not a folder')
    with pytest.raises(SystemExit) as exc:
        main(['-i', str(_image(tmp_path / 'in.png')), '-o', str(tmp_path / 'taken'), '--model',
              str(tmp_path / 'net.pth'), '--device', 'cpu'])
    assert exc.value.code == 2 and "output folder" in capsys.readouterr().err


ORACLE_SR = ['msrresnet_x4', 'msrresnet_x2', 'rrdbnet_x4', 'rrdbnet_x2', 'swinir_x2_pixelshuffle',
             'swinir_x4_nearestconv', 'dasr_msrresnetdynamic_x4', 'cddnet_msrresnetdynamic_x4']


@pytest.mark.parametrize('name', ORACLE_SR)
def test_reference_checkpoints_are_detected_and_reproduce_the_reference_outputs(oracle_dir, name):
    """State dicts written by BasicSR 1.4.2 / DASR / CDDNet themselves (../shared/oracle/archs):
    the detected arguments are the ones the reference was built with, and the outputs match."""
    import json
    entry = json.loads((oracle_dir / 'archs' / 'manifest.json').read_text())[name]
    path = oracle_dir / 'archs' / entry['state_dict_randomized']
    net, net_opt, how = auto_model.load_auto(str(path))
    assert how == 'detected from the state dict'
    for key, value in entry['kwargs'].items():
        if key != 'img_range':  # not in any tensor: the default (1.0) is what the references use
            assert net_opt[key] == value, (key, net_opt)
    data = np.load(oracle_dir / 'archs' / entry['npz'])
    x = torch.from_numpy(data['input'])
    with torch.no_grad():
        if 'output_pred_randomized' in data:  # DASR / CDDNet: expert weights from the reference predictor
            out = net(x, torch.from_numpy(data['weights_pred']))
            ref = data['output_pred_randomized']
        else:
            out, ref = net(x), data['output_randomized']
    # float32 on another CPU's kernels: the reference's own float32-vs-float64 gap is ~6e-7
    torch.testing.assert_close(out, torch.from_numpy(ref), atol=1e-5, rtol=0)


def test_infer_detects_a_dasr_generator_and_its_predictor(oracle_dir, tmp_path, capsys):
    from realsr.archs.dasr_arch import PredictorConditionedNet
    from realsr.engine.inference import main
    archs = oracle_dir / 'archs'
    gen, pred = archs / 'cddnet_msrresnetdynamic_x4.pth', archs / 'dasr_degradation_predictor.pth'
    img = _image(tmp_path / 'in.png', size=(12, 10))
    assert main(['-i', str(img), '-o', str(tmp_path / 'out'), '--model', str(gen), '--predictor', str(pred),
                 '--device', 'cpu', '--quiet']) == 0
    err = capsys.readouterr().err
    assert 'MSRResNetDynamicCDDNet(' in err and 'Degradation_Predictor(in_nc=3, nf=16, num_params=33' in err
    net_g, _, _ = auto_model.load_auto(str(gen))
    net_p, _, _ = auto_model.load_auto(str(pred), 'params')
    x = torch.from_numpy(np.ascontiguousarray(cv2.imread(str(img))[:, :, ::-1]).astype(np.float32) / 255)
    with torch.no_grad():
        expected = PredictorConditionedNet(net_g, net_p)(x.permute(2, 0, 1)[None]).clamp(0, 1)
    expected = expected[0].permute(1, 2, 0).numpy()[:, :, ::-1] * 255
    out = cv2.imread(str(tmp_path / 'out' / 'in_out.png')).astype(np.float64)
    assert out.shape == (40, 48, 3) and np.abs(out - expected).max() <= 1.0
