"""Channel saliency maps (realsr.analysis.channel_saliency and scripts/csm.py) on a tiny network."""
import csv
import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from realsr.analysis import channel_saliency as cs
from realsr.archs import build_network
from realsr.runtime.checkpoint import save_network
from realsr.utils.img_util import imwrite, tensor2img

REPO_ROOT = Path(__file__).resolve().parents[1]
NUM_FEAT = 8


def tiny_net(seed=0):
    torch.manual_seed(seed)
    net = build_network({'type': 'MSRResNet_details', 'num_feat': NUM_FEAT, 'num_block': 2, 'upscale': 4})
    return net.eval()


def lr_image(seed=1, size=24):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, size, size, generator=g)


def conv_last_input(net, x):
    """The features entering conv_last, computed without hooks."""
    feat = net.lrelu(net.conv_first(x))
    feat = net.forward_body(feat)
    feat = net.lrelu(net.pixel_shuffle(net.upconv1(feat)))
    feat = net.lrelu(net.pixel_shuffle(net.upconv2(feat)))
    return net.lrelu(net.conv_hr(feat))


def tail(net, x, feat):
    return net.conv_last(feat) + F.interpolate(x, scale_factor=4, mode='bilinear', align_corners=False)


def load_script():
    spec = importlib.util.spec_from_file_location('csm_script', REPO_ROOT / 'scripts' / 'csm.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# attribution
# ---------------------------------------------------------------------------------------------
def test_attribution_one_value_per_channel_normalised_and_equal_to_a_hand_computation():
    net, x = tiny_net(), lr_image()
    attribution, saliency, features, out = cs.channel_attribution(net, x, 'conv_last:input')
    assert attribution.shape == (NUM_FEAT, )
    assert saliency.shape == (NUM_FEAT, 96, 96) and features.shape == (NUM_FEAT, 96, 96)
    assert (attribution >= 0).all() and (saliency >= 0).all()
    assert saliency.max().item() == 1.0  # |G| / max|G| over the whole site
    torch.testing.assert_close(attribution, saliency.sum(dim=(1, 2)))
    torch.testing.assert_close(out, net(x))
    # the same gradient without hooks: A = sum sqrt(dx^2 + dy^2 + eps) of the output
    with torch.no_grad():
        feat = conv_last_input(net, x)
    feat.requires_grad_(True)
    img = tail(net, x, feat)
    dx = img[..., :-1, :-1] - img[..., 1:, :-1]
    dy = img[..., :-1, :-1] - img[..., :-1, 1:]
    grad, = torch.autograd.grad(torch.sqrt(dx**2 + dy**2 + 1e-12).sum(), feat)
    expected = grad[0].abs() / grad.abs().max()
    torch.testing.assert_close(saliency, expected)
    torch.testing.assert_close(features, feat[0].detach())
    # the network's parameters keep requires_grad and get no .grad
    assert all(p.requires_grad and p.grad is None for p in net.parameters())


def test_attribution_share_sums_to_one_and_output_side_sites_work():
    net = tiny_net()
    samples = [('a', lr_image(1)[0], None), ('b', lr_image(2)[0], None)]
    result = cs.compute_channel_saliency(net, 'conv_hr:output', samples, progress=False)
    assert result.per_image_attribution.shape == (2, NUM_FEAT)
    np.testing.assert_allclose(result.attribution, result.per_image_attribution.mean(axis=0))
    np.testing.assert_allclose(result.attribution_share.sum(), 1.0)
    assert (result.attribution_share >= 0).all()
    assert list(result.maps) == ['a']  # keep_maps=1
    # conv_hr's output is not yet through the LeakyReLU, unlike conv_last's input
    with torch.no_grad():
        pre = net.conv_hr(net.lrelu(net.pixel_shuffle(net.upconv2(net.lrelu(net.pixel_shuffle(net.upconv1(
            net.forward_body(net.lrelu(net.conv_first(lr_image(1)))))))))))
    np.testing.assert_allclose(result.maps['a']['features'], pre[0].numpy(), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# ablation
# ---------------------------------------------------------------------------------------------
def _net_with_dead_and_strong_channels():
    net = tiny_net()
    with torch.no_grad():
        net.conv_last.weight[:, 3] = 0  # channel 3 does not reach the output
        net.conv_last.weight[:, 5] = 2.0  # channel 5 reaches it strongly
    return net


@pytest.mark.parametrize('with_gt', [True, False])
def test_ablating_a_channel_with_zero_conv_last_weights_changes_nothing(with_gt):
    net, x = _net_with_dead_and_strong_channels(), lr_image()
    gt = None
    if with_gt:  # the unablated output plus a little noise: any large change lowers the PSNR
        rng = np.random.default_rng(0)
        base = tensor2img(net(x).detach()).astype(np.int16)
        gt = np.clip(base + rng.integers(-3, 4, base.shape), 0, 255).astype(np.uint8)
    result = cs.compute_channel_saliency(net, 'conv_last:input', [('img', x, gt)], chunk=3, progress=False)
    drop = result.psnr_drop
    assert drop.shape == (NUM_FEAT, )
    assert drop[3] == 0.0  # exactly
    assert drop[5] > 1.0
    assert drop.argmax() == 5
    if not with_gt:
        assert result.ablation_psnr[3] == result.reference_psnr == cs.psnr_ceiling(np.zeros((96, 96, 3), np.uint8))
        assert (drop >= 0).all()


def test_ablated_output_equals_the_network_run_by_hand_and_batching_does_not_matter():
    net, x = tiny_net(), lr_image()
    masks = cs.ablation_masks(NUM_FEAT)
    assert masks.shape == (NUM_FEAT + 1, NUM_FEAT) and masks[0].all() and masks[4, 3] == 0 and masks[4].sum() == 7
    outs = {}
    for strategy in ('broadcast', 'repeat'):
        for chunk in (1, 4, 64):
            got = {}
            used = cs.run_ablations(net, x, 'conv_last:input', masks, chunk=chunk, strategy=strategy,
                                    consume=lambda row, out: got.__setitem__(row, out.clone()))
            assert used == strategy and sorted(got) == list(range(NUM_FEAT + 1))
            outs[strategy, chunk] = torch.stack([got[r] for r in range(NUM_FEAT + 1)])
    with torch.no_grad():
        feat = conv_last_input(net, x)
        expected = torch.cat([tail(net, x, feat * m[None, :, None, None]) for m in masks])
    for value in outs.values():
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
    # 'auto' picks the batch-1 trunk for this arch
    assert cs.run_ablations(net, x, 'conv_last:input', masks[:3], chunk=2) == 'broadcast'


def test_rescale_mode_keeps_the_l1_mass():
    feat = torch.randn(1, NUM_FEAT, 5, 6)
    masks = cs.ablation_masks(NUM_FEAT)
    out = cs.apply_masks(feat, masks, 'rescale')
    assert torch.equal(out[0], feat[0])  # the reference row is untouched
    torch.testing.assert_close(out.abs().sum(dim=(1, 2, 3)), feat.abs().sum().expand(NUM_FEAT + 1))
    for k in range(1, NUM_FEAT + 1):  # row k zeroes channel k-1 and scales the others up
        assert (out[k, k - 1] == 0).all()
        assert (out[k].abs().sum(dim=(1, 2)) >= feat[0].abs().sum(dim=(1, 2)) * masks[k] - 1e-6).all()
    assert torch.equal(cs.apply_masks(feat, masks, 'zero')[2], feat[0] * masks[2][:, None, None])
    with pytest.raises(ValueError, match='rescale'):
        cs.apply_masks(feat, masks, 'half')


# ---------------------------------------------------------------------------------------------
# bad sites
# ---------------------------------------------------------------------------------------------
def test_bad_sites_give_clear_errors():
    net, x = tiny_net(), lr_image()
    with pytest.raises(cs.SiteError, match="'conv_lsat:input' matches no module.*conv_last"):
        cs.resolve_site(net, 'conv_lsat:input')
    with pytest.raises(ValueError, match='input or output'):
        cs.resolve_site(net, 'conv_last:inside')
    with pytest.raises(cs.SiteError, match='runs more than once'):  # one LeakyReLU module serves every layer
        cs.channel_attribution(net, x, 'lrelu:output')
    with pytest.raises(cs.SiteError, match='matches 2 modules'):
        cs.channel_attribution(net, x, 'body?:output')


# ---------------------------------------------------------------------------------------------
# plots and the command line
# ---------------------------------------------------------------------------------------------
def test_plots_have_the_documented_sizes():
    img = cs.bar_chart(np.linspace(1, -0.5, 64), [str(i) for i in range(64)], 'title', 'y', ref_line=0.2)
    assert img.shape == cs.bar_chart_size(64) + (3, ) and img.dtype == np.uint8
    maps = np.random.default_rng(0).standard_normal((5, 30, 20))
    h, w, th, tw, cols, rows = cs.grid_layout(5, (30, 20), tile=60, columns=4)
    assert (th, tw, cols, rows) == (60, 40, 4, 2)
    assert cs.heatmap_grid(maps, list('abcde'), 't', tile=60, columns=4).shape == (h, w, 3)
    colours = cs.diverging_colormap(np.array([-1.0, 0.0, 1.0]))
    assert tuple(colours[1]) == (255, 255, 255) and colours[0, 0] > colours[0, 2] and colours[2, 2] > colours[2, 0]
    assert cs.nice_ticks(0, 0.93) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert cs.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)


def _write_dataset(root, net, names=('a', 'b')):
    lr_dir, gt_dir = root / 'lr', root / 'gt'
    for i, name in enumerate(names):
        x = lr_image(seed=10 + i)
        imwrite(tensor2img(x), str(lr_dir / f'{name}x4.png'))
        with torch.no_grad():
            imwrite(tensor2img(net(x)), str(gt_dir / f'{name}.png'))
    return lr_dir, gt_dir


def test_cli_writes_pngs_and_csv(tmp_path, capsys):
    csm = load_script()
    net = _net_with_dead_and_strong_channels()
    model = tmp_path / 'net_g.pth'
    save_network([tiny_net(seed=5), net], str(model), ['params', 'params_ema'])
    lr_dir, gt_dir = _write_dataset(tmp_path, net)
    out = tmp_path / 'csm'
    rc = csm.main(['--arch', 'MSRResNet_details', '--arch-opt', f'num_feat={NUM_FEAT}', 'num_block=2', 'upscale=4',
                   '--model', str(model), '--param-key', 'params_ema', '--site', 'conv_last:input', '--input',
                   str(lr_dir), '--gt', str(gt_dir), '--gt-tmpl', '{}x4', '--out', str(out), '--top', '5',
                   '--device', 'cpu', '--chunk', '4', '--quiet'])
    assert rc == 0
    printed = capsys.readouterr().out
    site_dir = out / 'conv_last.input'
    assert str(site_dir / 'attribution.png') in printed
    for name in ('attribution.png', 'ablation_drop.png', 'attribution_vs_drop.png', 'features_ax4.png',
                 'saliency_ax4.png'):
        img = cv2.imread(str(site_dir / name), cv2.IMREAD_UNCHANGED)
        assert img is not None and img.dtype == np.uint8 and img.ndim == 3, name
    for name in ('attribution.png', 'ablation_drop.png'):
        assert cv2.imread(str(site_dir / name)).shape == cs.bar_chart_size(NUM_FEAT) + (3, )
    h, w = cs.grid_layout(5, (96, 96))[:2]
    assert cv2.imread(str(site_dir / 'features_ax4.png')).shape == (h, w, 3)
    assert cv2.imread(str(site_dir / 'attribution_vs_drop.png')).shape == cs.SCATTER_SIZE + (3, )
    assert not (site_dir / 'features_bx4.png').exists()  # --map-images 1
    with open(site_dir / 'channels.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert [int(r['channel']) for r in rows] == list(range(NUM_FEAT))
    assert sum(float(r['attribution_share']) for r in rows) == pytest.approx(1.0, abs=1e-4)
    assert float(rows[3]['psnr_drop']) == 0.0  # the dead channel of the params_ema weights
    assert max(rows, key=lambda r: float(r['psnr_drop']))['channel'] == '5'
    assert sorted(int(r['attribution_rank']) for r in rows) == list(range(1, NUM_FEAT + 1))
    with open(site_dir / 'per_image.csv', newline='') as f:
        assert len(list(csv.DictReader(f))) == 2 * NUM_FEAT


def test_cli_from_an_option_file_takes_the_regularizer_site(tmp_path):
    csm = load_script()
    net = tiny_net()
    model = tmp_path / 'net_g.pth'
    save_network([net], str(model), ['params'])
    lr_dir, gt_dir = _write_dataset(tmp_path, net, names=('a', ))
    opt = tmp_path / 'test.yml'
    opt.write_text(f"""
name: csm_test
network_g: {{type: MSRResNet_details, num_feat: {NUM_FEAT}, num_block: 2, upscale: 4}}
path: {{pretrain_network_g: {model}, strict_load_g: true}}
regularizers:
  - {{type: ChannelDropout, p: 0.7, sites: ['conv_hr:output']}}
datasets:
  test_1: {{name: t, type: PairedImageDataset, dataroot_gt: {gt_dir}, dataroot_lq: {lr_dir}, filename_tmpl: '{{}}x4'}}
""")
    rc = csm.main(['--opt', str(opt), '--out', str(tmp_path / 'out'), '--device', 'cpu', '--quiet',
                   '--ablation', 'rescale'])
    assert rc == 0
    assert (tmp_path / 'out' / 'conv_hr.output' / 'channels.csv').is_file()


def test_cli_bad_site_and_missing_gt_are_clear_errors(tmp_path, capsys):
    csm = load_script()
    net = tiny_net()
    model = tmp_path / 'net_g.pth'
    save_network([net], str(model), ['params'])
    lr_dir, gt_dir = _write_dataset(tmp_path, net, names=('a', ))
    common = ['--arch', 'MSRResNet_details', '--arch-opt', f'num_feat={NUM_FEAT}', 'num_block=2', '--model',
              str(model), '--input', str(lr_dir), '--out', str(tmp_path / 'out'), '--device', 'cpu', '--quiet']
    assert csm.main(common + ['--site', 'conv_final:input']) == 2
    err = capsys.readouterr().err
    assert "csm: error: site 'conv_final:input' matches no module" in err and 'conv_last' in err
    assert csm.main(common + ['--gt', str(gt_dir)]) == 2  # LR 'ax4' vs GT 'a' without --gt-tmpl
    assert "no GT for 'ax4.png'" in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()
