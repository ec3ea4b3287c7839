"""realsr-infer with DASR / CDDNet generators: the degradation predictor gives the expert weights,
from the whole image also when tiled; the option file's network_p or --predictor; the error."""
import cv2
import numpy as np
import pytest
import torch
import yaml

from realsr.archs.dasr_arch import Degradation_Predictor, MSRResNetDynamic, PredictorConditionedNet
from realsr.engine import inference
from realsr.utils.tiling import tiled_forward

G_OPT = dict(num_feat=8, num_block=1, num_models=5, upscale=4)


def _nets(tmp_path, nf=8):
    torch.manual_seed(0)
    net_g = MSRResNetDynamic(**G_OPT, init_dynamic=True).eval()
    net_p = Degradation_Predictor(nf=nf, num_params=33, num_networks=5).eval()
    torch.save({'params': net_g.state_dict(), 'params_ema': net_g.state_dict()}, tmp_path / 'g.pth')
    torch.save({'params': net_p.state_dict()}, tmp_path / 'p.pth')
    return net_g, net_p


def _image(tmp_path, h=20, w=28):
    img = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / 'in.png'), img)
    return img


def _expected(net_g, net_p, img):
    x = torch.from_numpy(img[:, :, ::-1].astype(np.float32).transpose(2, 0, 1).copy() / 255)[None]
    with torch.no_grad():
        out = net_g(x, net_p(x)[1])[0].clamp(0, 1).numpy().transpose(1, 2, 0)[:, :, ::-1]
    return np.round(out * 255).astype(np.uint8)


def test_option_file_with_network_p(tmp_path):
    net_g, net_p = _nets(tmp_path)
    img = _image(tmp_path)
    opt = {'name': 'cddnet_infer', 'model_type': 'SRGANDynamicModel', 'scale': 4,
           'network_g': dict(type='MSRResNetDynamic', **G_OPT),
           'network_p': {'type': 'Degradation_Predictor', 'nf': 8, 'num_params': 33, 'num_networks': 5},
           'path': {'pretrain_network_g': str(tmp_path / 'g.pth'), 'pretrain_network_p': str(tmp_path / 'p.pth'),
                    'param_key_g': 'params_ema', 'strict_load_g': True}}
    (tmp_path / 'test.yml').write_text(yaml.safe_dump(opt))
    inference.main(['-i', str(tmp_path / 'in.png'), '-o', str(tmp_path / 'out'), '--opt', str(tmp_path / 'test.yml'),
                    '--device', 'cpu', '--quiet'])
    out = cv2.imread(str(tmp_path / 'out' / 'in_out.png'))
    assert out.shape == (80, 112, 3)
    assert np.abs(out.astype(int) - _expected(net_g, net_p, img)).max() <= 1


def test_arch_and_predictor_flags_and_tiling_uses_the_whole_image_weights(tmp_path):
    net_g, net_p = _nets(tmp_path, nf=64)  # --arch builds DASR's default predictor (nf 64, 33 params)
    img = _image(tmp_path, 40, 36)
    common = ['-i', str(tmp_path / 'in.png'), '--arch', 'MSRResNetDynamic', '--model', str(tmp_path / 'g.pth'),
              '--predictor', str(tmp_path / 'p.pth'), '--device', 'cpu', '--quiet']
    for key, value in G_OPT.items():
        common += ['--net-opt', f'{key}={value}']
    inference.main(common + ['-o', str(tmp_path / 'whole')])
    inference.main(common + ['-o', str(tmp_path / 'tiled'), '--tile', '16', '--tile-pad', '8'])
    whole = cv2.imread(str(tmp_path / 'whole' / 'in_out.png')).astype(int)
    tiled = cv2.imread(str(tmp_path / 'tiled' / 'in_out.png')).astype(int)
    assert np.abs(whole - _expected(net_g, net_p, img)).max() <= 1
    assert np.abs(whole - tiled).max() <= 1


def test_tiles_get_the_whole_image_weights_not_their_own():
    torch.manual_seed(1)
    net_g = MSRResNetDynamic(**G_OPT, init_dynamic=True).eval()
    net_p = Degradation_Predictor(nf=8, num_params=33, num_networks=5).eval()
    net = PredictorConditionedNet(net_g, net_p)
    x = torch.rand(1, 3, 48, 48)
    x[..., :24] *= 0.1  # a dark half, so a tile's own weights would differ from the image's
    with torch.no_grad():
        net.condition(x)
        # 12 px of context exceed the net's receptive radius (about 9 LR px with the LKAT block)
        tiled = tiled_forward(net, x, 16, 12)
        net.condition(None)
        untiled = net(x)
        own_weights = tiled_forward(net, x, 16, 12)  # each tile's predictor sees only its own 40 px
    torch.testing.assert_close(tiled, untiled, rtol=0, atol=1e-5)
    assert (own_weights - untiled).abs().max() > 1e-4


def test_missing_predictor_is_named(tmp_path, capsys):
    _nets(tmp_path)
    _image(tmp_path)
    args = ['-i', str(tmp_path / 'in.png'), '-o', str(tmp_path / 'o'), '--arch', 'MSRResNetDynamic',
            '--model', str(tmp_path / 'g.pth'), '--device', 'cpu', '--quiet']
    for key, value in G_OPT.items():
        args += ['--net-opt', f'{key}={value}']
    with pytest.raises(SystemExit) as exc:
        inference.main(args)
    assert exc.value.code == 2
    assert 'MSRResNetDynamic takes its expert weights from a degradation predictor: give --predictor' in \
        capsys.readouterr().err
