"""ONNX export (realsr-export): dynamic batch/height/width, window archs padded and cropped inside
the graph, DASR/CDDNet with its predictor, fp16, and clear errors. Tiny networks keep it fast.

Tolerance 1e-4 (the issue's): onnxruntime and PyTorch run the same float32 graph with different
kernels; on these tiny nets the differences are a few 1e-7."""
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip('onnx', reason="ONNX export needs onnx and onnxruntime: pip install 'realsr[onnx]'")
pytest.importorskip('onnxruntime', reason="ONNX export needs onnx and onnxruntime: pip install 'realsr[onnx]'")

import onnxruntime as ort  # noqa: E402

from realsr.archs import build_network  # noqa: E402
from realsr.archs.dasr_arch import PredictorConditionedNet  # noqa: E402
from realsr.engine import export  # noqa: E402
from realsr.runtime import checkpoint, model_files  # noqa: E402

from conftest import REPO_ROOT  # noqa: E402

SRRESNET = {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 2, 'upscale': 4}
SWINIR = {'type': 'SwinIR', 'upscale': 2, 'img_size': 16, 'window_size': 4, 'embed_dim': 12, 'depths': [2],
          'num_heads': [2], 'upsampler': 'pixelshuffle', 'mlp_ratio': 2.0}


def _net(opt, seed=0):
    torch.manual_seed(seed)
    return build_network(dict(opt)).eval()


def _onnx_run(path, x):
    return ort.InferenceSession(str(path), providers=['CPUExecutionProvider']).run(None, {'input': x.numpy()})[0]


RRDB_X2 = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1, 'num_grow_ch': 4,
           'scale': 2}


@pytest.mark.parametrize('opt, expected_multiple', [(SRRESNET, 1), (SWINIR, 4), (RRDB_X2, 2)],
                         ids=['SRResNet', 'SwinIR', 'RRDBNet-x2'])
def test_round_trip_two_sizes_within_1e4(tmp_path, opt, expected_multiple):
    net = _net(opt)
    path = tmp_path / 'net.onnx'
    module, multiple, scale = export.export_onnx(net, str(path))
    assert multiple == expected_multiple and scale == opt.get('upscale', opt.get('scale'))
    g = torch.Generator().manual_seed(3)
    for shape in ((1, 3, 16, 16), (2, 3, 13, 18)):  # the second is not a window multiple, and batch 2
        x = torch.rand(shape, generator=g)
        with torch.no_grad():
            expected = net(torch.nn.functional.pad(x, (0, (-shape[3]) % multiple, 0, (-shape[2]) % multiple),
                                                   mode='reflect'))[..., :shape[2] * scale, :shape[3] * scale]
        got = _onnx_run(path, x)
        assert got.shape == (shape[0], 3, shape[2] * scale, shape[3] * scale)
        assert np.abs(got - expected.numpy()).max() < 1e-4
    assert not net.training, 'the export must leave the network in eval mode'


def test_dasr_exports_the_predictor_conditioned_net(tmp_path):
    torch.manual_seed(0)
    net_g = build_network({'type': 'MSRResNetDynamicCDDNet', 'num_feat': 8, 'num_block': 1, 'num_models': 3,
                           'upscale': 2, 'init_dynamic': True})
    net_p = build_network({'type': 'Degradation_Predictor', 'in_nc': 3, 'nf': 8, 'num_params': 33,
                           'num_networks': 3})
    net = PredictorConditionedNet(net_g, net_p).eval()
    path = tmp_path / 'cdd.onnx'
    module, _, scale = export.export_onnx(net, str(path))
    results = export.verify(str(path), module, [(1, 16, 16), (2, 15, 21)])
    assert scale == 2 and all(diff < 1e-4 for _, diff in results), results


def test_fp16_export_runs_on_onnxruntime_cpu(tmp_path):
    net = _net(SWINIR)
    path = tmp_path / 'half.onnx'
    try:
        module, multiple, _ = export.export_onnx(net, str(path), fp16=True)
        results = export.verify(str(path), module, export.default_sizes(multiple), fp16=True)
    except export.ExportError as err:
        pytest.skip(f'this onnxruntime build cannot run the fp16 graph on a CPU: {err}')
    # fp16 against fp16: both round to 11 significant bits; outputs in [0, 1] differ by a few ulps (2^-11)
    assert all(diff < 4e-3 for _, diff in results), results


def test_cli_detects_the_arch_and_prints_the_difference(tmp_path):
    net = _net(SWINIR, seed=2)
    model = tmp_path / 'net_g_5.pth'
    checkpoint.save_network(net, str(model), 'params_ema')
    out = tmp_path / 'swinir.onnx'
    done = subprocess.run([sys.executable, str(REPO_ROOT / 'realsr' / 'export.py'), '--model', str(model),
                           '-o', str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'SwinIR x2, padded to a multiple of 4' in done.stdout
    diffs = [float(d) for d in __import__('re').findall(r'max abs difference ([\d.e+-]+)', done.stdout)]
    assert len(diffs) == 2 and max(diffs) < 1e-4
    assert not list(tmp_path.glob('.*tmp-*'))


def test_cli_arch_and_safetensors(tmp_path, capsys):
    net = _net(SRRESNET, seed=4)
    model = tmp_path / 'net.safetensors'
    checkpoint.save_network(net, str(model), 'params', metadata=model_files.arch_metadata(SRRESNET, 1))
    assert export.main(['--arch', 'MSRResNet', '--net-opt', 'num_feat=8', '--net-opt', 'num_block=2',
                        '--model', str(model), '-o', str(tmp_path / 'a.onnx'), '--opset', '13']) == 0
    assert 'opset 13' in capsys.readouterr().out


def test_errors_are_one_clear_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        export.main(['--model', str(tmp_path / 'missing.pth'), '-o', str(tmp_path / 'x.onnx')])
    assert exc.value.code == 2 and 'missing.pth' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export.main(['--model', str(tmp_path / 'missing.pth'), '-o', str(tmp_path / 'x.onnx'), '--opset', '9'])
    assert '--opset 9' in capsys.readouterr().err
    assert not (tmp_path / 'x.onnx').exists()


def test_missing_onnx_names_the_pip_command(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == 'onnxruntime':
            raise ImportError('No module named onnxruntime', name='onnxruntime')
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', no_onnxruntime)
    with pytest.raises(export.ExportError, match=r"onnxruntime is missing.*pip install 'realsr\[onnx\]'"):
        export.export_onnx(_net(SRRESNET), 'unused.onnx')


def test_an_unexportable_network_is_one_clear_error_and_leaves_no_file(tmp_path):
    class Unexportable(torch.nn.Module):
        def forward(self, x):  # singular values have no ONNX operator
            return x * torch.linalg.svdvals(x[0, 0]).sum()

    with pytest.raises(export.ExportError, match=r'Unexportable cannot be exported to ONNX \(opset 17\)'):
        export.export_onnx(Unexportable(), str(tmp_path / 'u.onnx'))
    assert list(tmp_path.iterdir()) == []


def test_cli_opt_file(tmp_path, capsys):
    import yaml
    net = _net(SWINIR, seed=5)
    checkpoint.save_network(net, str(tmp_path / 'net_g.pth'), 'params_ema')
    opt = {'name': 'x', 'model_type': 'SwinIRModel', 'scale': 2, 'network_g': dict(SWINIR),
           'path': {'pretrain_network_g': str(tmp_path / 'net_g.pth'), 'param_key_g': 'params_ema'}}
    (tmp_path / 'test.yml').write_text(yaml.safe_dump(opt))
    assert export.main(['--opt', str(tmp_path / 'test.yml'), '-o', str(tmp_path / 'o.onnx')]) == 0
    out = capsys.readouterr().out
    assert 'SwinIR x2, padded to a multiple of 4' in out and out.count('max abs difference') == 2
