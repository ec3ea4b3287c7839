"""Reflash Dropout (ChannelDropout), Adaptive Dropout (AdaptiveDropout) and the papers' arch names.

Facts: spec/regularizers.md sections 1, 3, 7, 8 and spec/archs.md section 4. Covered: the identity
in eval mode (bit-exact against the plain arch), drop statistics and scaling, the mixing
z = p*y + (1-p)*Dropout2d_q(y) against a replay of torch's RNG, the layer-wise schedule in closed
form (also after a resume), gradients, strict loading of the base archs' keys, site errors, the
``regularizers:`` list through SRModel, the papers' option files and our own on CPU.
"""
import copy
import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch.nn import functional as F

from conftest import REPO_ROOT, write_pair_folders
from realsr.archs.rrdbnet_arch import RRDBNet
from realsr.archs.srresnet_arch import MSRResNet, MSRResNet_details
from realsr.regularizers import build_regularizers
from realsr.regularizers.dropout import AdaptiveDropout, ChannelDropout, _in_numeric_order
from realsr.registry import ARCH_REGISTRY, REGULARIZER_REGISTRY

SRRESNET = dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=3, upscale=4)
RRDB = dict(num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, num_grow_ch=4)

# alias -> (base arch, its kwargs, regularizer class, p / None, mode)
ALIASES = {
    'MSRResNet_details_dropoutlast_channel07': (MSRResNet_details, SRRESNET, ChannelDropout, 0.7, 'channel'),
    'MSRResNet_details_dropoutlast_element07': (MSRResNet_details, SRRESNET, ChannelDropout, 0.7, 'element'),
    'MSRResNet_dropoutlast_channel07': (MSRResNet, SRRESNET, ChannelDropout, 0.7, 'channel'),
    'MSRResNet_dropoutlast_element07': (MSRResNet, SRRESNET, ChannelDropout, 0.7, 'element'),
    'RRDBNet_dropoutlast_channel05': (RRDBNet, RRDB, ChannelDropout, 0.5, 'channel'),
    'RRDBNet_dropoutlast_element05': (RRDBNet, RRDB, ChannelDropout, 0.5, 'element'),
    'MSRResNet_detailss': (MSRResNet_details, SRRESNET, None, None, None),
    'MSRResNet_details_adaptive_dropout': (MSRResNet_details, SRRESNET, AdaptiveDropout, None, None),
}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread avoids oversubscription on busy machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _seeded(cls, kwargs, seed=0):
    torch.manual_seed(seed)
    return cls(**kwargs)


def _reference_plist(iterations, p_init=0.3, step=20000, n=17):
    """The reference's training loop, incrementally: plist[it // step - 1] = 1 at multiples of
    step (it counted from 1, incremented before the check), up to step * n. Yields (it, plist)."""
    plist = [p_init] * n
    for it in range(1, iterations + 1):
        if it % step == 0 and it <= step * n:
            plist[it // step - 1] = 1.0
        yield it, list(plist)


# ---------------------------------------------------------------------------------------------
# registry, validation, sites
# ---------------------------------------------------------------------------------------------
def test_registered_and_parameter_free():
    assert REGULARIZER_REGISTRY.get('ChannelDropout') is ChannelDropout
    assert REGULARIZER_REGISTRY.get('AdaptiveDropout') is AdaptiveDropout
    for name in ALIASES:
        assert name in ARCH_REGISTRY
    net = MSRResNet_details(**SRRESNET)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    build_regularizers([{'type': 'ChannelDropout', 'p': 0.7}, {'type': 'AdaptiveDropout'}], net)
    assert list(net.state_dict()) == list(before)  # no parameters or buffers added
    assert sum(1 for _ in net.parameters()) == len(before)


@pytest.mark.parametrize('kwargs, message', [
    ({'p': 1.0}, 'p must be in [0, 1)'), ({'p': -0.1}, 'p must be in [0, 1)'), ({'p': 'half'}, 'p must be a number'),
    ({'p': True}, 'p must be a number'), ({'mode': 'spatial'}, "mode must be one of channel, element"),
])
def test_channel_dropout_rejects_bad_options(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        ChannelDropout(**kwargs)


@pytest.mark.parametrize('kwargs, message', [
    ({'q': 1}, 'q must be in'), ({'p_init': 1.5}, 'p_init must be in'), ({'step': 0}, 'step must be a positive'),
    ({'step': 2.5}, 'step must be a positive'), ({'n_layers': 0}, 'n_layers must be a positive'),
])
def test_adaptive_dropout_rejects_bad_options(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        AdaptiveDropout(**kwargs)


def test_unknown_site_is_a_clear_error_listing_module_names():
    with pytest.raises(ValueError) as err:
        ChannelDropout(p=0.5, sites=['conv_lst:input']).attach(MSRResNet(**SRRESNET))
    assert 'conv_lst:input' in str(err.value) and 'conv_last' in str(err.value) and 'conv_first' in str(err.value)
    with pytest.raises(ValueError) as err:  # no default sites for RRDBNet: say what to do
        AdaptiveDropout().attach(RRDBNet(**RRDB))
    assert 'Pass sites explicitly' in str(err.value) and 'body.0.rdb1.conv1' in str(err.value)
    with pytest.raises(ValueError, match='n_layers=17 but the sites match 4 modules'):
        AdaptiveDropout(n_layers=17).attach(MSRResNet_details(**SRRESNET))


def test_channel_mode_needs_4d_features():
    reg = ChannelDropout(p=0.5)
    with pytest.raises(ValueError, match=r"needs \(B, C, H, W\) features.*shape \(2, 5, 8\)"):
        reg.apply(torch.ones(2, 5, 8), 0, 'tokens')
    assert ChannelDropout(p=0.5, mode='element').apply(torch.ones(2, 5, 8), 0, 'tokens').shape == (2, 5, 8)


def test_adaptive_default_sites_in_block_order():
    # MSRResNet_details: body1..body12 in numeric order (not body1, body10, body11, body12, body2...)
    net = MSRResNet_details(num_feat=4, num_block=12)
    reg = AdaptiveDropout().attach(net)
    names = [name for _, name, _ in reg.attached]
    assert names == [f'body{k}.0.conv1' for k in range(1, 13)] + ['conv_last']
    assert [side for _, _, side in reg.attached] == ['output'] * 12 + ['input']
    # plain MSRResNet keys
    reg = AdaptiveDropout().attach(MSRResNet(num_feat=4, num_block=11))
    assert [name for _, name, _ in reg.attached] == [f'body.{i}.conv1' for i in range(11)] + ['conv_last']
    # a glob on the details layout gives the same order, and the 16-block network has 17 sites
    reg = AdaptiveDropout(n_layers=17, sites=['body*.0.conv1:output', 'conv_last:input']).attach(
        MSRResNet_details(num_feat=4))
    assert [name for _, name, _ in reg.attached] == [f'body{k}.0.conv1' for k in range(1, 17)] + ['conv_last']


def test_matches_are_put_in_numeric_order_even_if_created_out_of_order():
    net = nn.Module()
    for k in (1, 10, 11, 2, 3):  # lexicographic creation order
        setattr(net, f'body{k}', nn.Sequential(nn.Conv2d(1, 1, 1)))
    net.conv_last = nn.Conv2d(1, 1, 1)
    reg = AdaptiveDropout(sites=['body*.0:output', 'conv_last:input']).attach(net)
    assert [name for _, name, _ in reg.attached] == ['body1.0', 'body2.0', 'body3.0', 'body10.0', 'body11.0',
                                                     'conv_last']
    # names of different shapes keep the network's (creation) order
    items = [('s', n, None, 'output') for n in ('conv_first', 'conv_up1', 'conv_hr', 'conv_last')]
    assert _in_numeric_order(items) == items


# ---------------------------------------------------------------------------------------------
# eval mode: bit-exact identity
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('base, kwargs, reg_opts', [
    (MSRResNet_details, SRRESNET, [{'type': 'ChannelDropout', 'p': 0.7}]),
    (MSRResNet_details, SRRESNET, [{'type': 'ChannelDropout', 'p': 0.7, 'mode': 'element'}]),
    (MSRResNet_details, SRRESNET, [{'type': 'AdaptiveDropout'}]),
    (MSRResNet, SRRESNET, [{'type': 'AdaptiveDropout', 'q': 0.9, 'p_init': 0.0}]),
    (RRDBNet, RRDB, [{'type': 'ChannelDropout', 'p': 0.5}]),
    (RRDBNet, RRDB, [{'type': 'AdaptiveDropout', 'sites': ['body.*.rdb1.conv1:output', 'conv_last:input']}]),
])
def test_eval_mode_is_bit_exact_plain_arch(base, kwargs, reg_opts):
    plain = _seeded(base, kwargs).eval()
    regularized = _seeded(base, kwargs)
    regs = build_regularizers(reg_opts, regularized)
    for reg in regs:
        reg.set_iteration(1)
    regularized.eval()
    sd_a, sd_b = plain.state_dict(), regularized.state_dict()
    assert list(sd_a) == list(sd_b) and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    x = torch.rand(2, 3, 12, 12)
    rng = torch.get_rng_state()
    with torch.no_grad():
        assert torch.equal(plain(x), regularized(x))
    assert torch.equal(rng, torch.get_rng_state())  # eval draws no mask
    with torch.no_grad():  # and train mode does differ (p > 0)
        assert not torch.equal(regularized.train()(x), plain(x))


@pytest.mark.parametrize('alias', sorted(ALIASES))
def test_aliases_load_the_base_arch_keys_strictly(alias):
    base_cls, kwargs, reg_cls, p, mode = ALIASES[alias]
    base = _seeded(base_cls, kwargs, seed=1).eval()
    net = ARCH_REGISTRY.get(alias)(**kwargs)
    assert isinstance(net, base_cls)
    net.load_state_dict(base.state_dict(), strict=True)  # the papers' checkpoints: the base keys
    _seeded(base_cls, kwargs).load_state_dict(net.state_dict(), strict=True)  # and the other way round
    assert list(net.state_dict()) == list(base.state_dict())
    net.eval()
    x = torch.rand(1, 3, 10, 10)
    with torch.no_grad():
        assert torch.equal(net(x), base(x))
    regs = getattr(net, 'regularizers', [])
    if reg_cls is None:
        assert regs == []
        return
    assert len(regs) == 1 and type(regs[0]) is reg_cls
    if reg_cls is ChannelDropout:
        assert (regs[0].p, regs[0].mode) == (p, mode)
        assert regs[0].attached == [('conv_last:input', 'conv_last', 'input')]
    else:
        assert (regs[0].q, regs[0].p_init, regs[0].step) == (0.5, 0.3, 20000)
        assert len(regs[0].attached) == kwargs['num_block'] + 1


def test_full_size_aliases_have_the_papers_key_layout():
    net = ARCH_REGISTRY.get('MSRResNet_details_dropoutlast_channel07')()
    keys = list(net.state_dict())
    assert len(keys) == 74 and sum(p.numel() for p in net.parameters()) == 1517571
    assert 'body16.0.conv2.weight' in keys and 'body.0.conv1.weight' not in keys
    adaptive = ARCH_REGISTRY.get('MSRResNet_details_adaptive_dropout')()
    assert list(adaptive.state_dict()) == keys
    assert len(adaptive.regularizers[0].attached) == 17


def test_adaptive_alias_keeps_pytorch_default_init_in_the_blocks():
    """The Adaptive Dropout repository's blocks skip the x0.1 Kaiming init; created in the same
    order, a seeded constructor gives the blocks a pytorch_init ResidualBlockNoBN would get."""
    from realsr.archs.arch_util import ResidualBlockNoBN
    torch.manual_seed(3)
    net = ARCH_REGISTRY.get('MSRResNet_details_adaptive_dropout')(num_feat=16, num_block=2)
    torch.manual_seed(3)
    nn.Conv2d(3, 16, 3, 1, 1)  # conv_first comes first
    block = ResidualBlockNoBN(16, pytorch_init=True)
    assert torch.equal(net.body1[0].conv1.weight, block.conv1.weight)
    assert torch.equal(net.body1[0].conv2.bias, block.conv2.bias)
    bound = 1 / math.sqrt(16 * 9)  # PyTorch's default: within +-1/sqrt(fan_in)
    assert net.body2[0].conv1.weight.abs().max() <= bound
    assert net.body2[0].conv1.weight.std() > 2 * MSRResNet_details(num_feat=16).body2[0].conv1.weight.std()


# ---------------------------------------------------------------------------------------------
# training mode: statistics and the mixing
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('p', [0.7, 0.5, 0.2])
def test_channel_mode_statistics(p):
    torch.manual_seed(0)
    b, c = 32, 64
    x = torch.rand(b, c, 3, 5) + 0.5
    out = ChannelDropout(p=p).apply(x, 0, 'conv_last')
    zero = (out == 0).flatten(2)
    assert torch.equal(zero.all(-1), zero.any(-1))  # whole channel maps, per sample
    dropped = zero.all(-1)
    n = b * c
    assert abs(dropped.sum().item() - n * p) < 5 * math.sqrt(n * p * (1 - p))  # binomial bound
    assert 0 < dropped[:, 0].sum() < b  # per sample, not one mask for the batch
    kept = ~dropped
    ratio = out[kept] / x[kept]
    assert torch.allclose(ratio, torch.full_like(ratio, 1 / (1 - p)), rtol=1e-6, atol=0)
    ones = ChannelDropout(p=p).apply(torch.ones(4, 8, 2, 2), 0, 'conv_last')
    assert set(ones.unique().tolist()) <= {0.0, torch.tensor(1 / (1 - p)).item()}


def test_element_mode_statistics():
    torch.manual_seed(1)
    p = 0.7
    x = torch.rand(8, 16, 16, 16) + 0.5
    out = ChannelDropout(p=p, mode='element').apply(x, 0, 'conv_last')
    dropped = out == 0
    n = x.numel()
    assert abs(dropped.sum().item() - n * p) < 5 * math.sqrt(n * p * (1 - p))
    per_map = dropped.flatten(2).float().mean(-1)
    assert (per_map > 0).all() and (per_map < 1).all()  # elements, not whole channels
    assert torch.allclose(out[~dropped] / x[~dropped], torch.tensor(1 / (1 - p)), rtol=1e-6, atol=0)


def test_channel_dropout_matches_torch_modules_rng():
    """F.dropout2d / F.dropout use the global RNG exactly like nn.Dropout2d / nn.Dropout."""
    x = torch.randn(4, 6, 5, 5)
    for mode, module in (('channel', nn.Dropout2d(0.7)), ('element', nn.Dropout(0.7))):
        torch.manual_seed(5)
        got = ChannelDropout(p=0.7, mode=mode).apply(x, 0, 'conv_last')
        torch.manual_seed(5)
        assert torch.equal(got, module.train()(x))


def test_adaptive_mixing_replays_torch_rng():
    """z = p*y + (1-p)*Dropout2d_q(y) with the mask replayed by hand from the same seed:
    Dropout2d draws one Bernoulli(1-q) per (sample, channel) and scales by 1/(1-q)."""
    y = torch.randn(3, 5, 4, 4)
    reg = AdaptiveDropout(q=0.5, p_init=0.3)
    reg.num_sites = 17
    reg.set_iteration(100)
    torch.manual_seed(11)
    z = reg.apply(y, 4, 'body5.0.conv1')
    torch.manual_seed(11)
    mask = torch.empty(3, 5, 1, 1).bernoulli_(1 - 0.5)
    expected = 0.3 * y + (1 - 0.3) * (y * (mask / (1 - 0.5)))
    assert torch.equal(z, expected)
    assert 0 < mask.sum() < mask.numel()
    # kept channels are y * (0.3 + 0.7 * 2) = 1.7 y, dropped ones 0.3 y
    factor = z / y
    assert torch.allclose(factor, torch.where(mask.bool(), 1.7, 0.3).expand_as(y), rtol=1e-5)


def test_adaptive_mixing_mean_is_y():
    torch.manual_seed(2)
    y = torch.randn(1, 8, 2, 2)
    n = 20000
    reg = AdaptiveDropout(q=0.5, p_init=0.3)
    reg.num_sites = 17
    z = reg.apply(y.expand(n, -1, -1, -1).contiguous(), 0, 'body1.0.conv1')
    # per element: z = y * (0.3 + 0.7 * 2 m), sd of the mean = 0.7 |y| / sqrt(n)
    sd = 0.7 * y.abs() / math.sqrt(n)
    assert ((z.mean(0, keepdim=True) - y).abs() <= 5 * sd + 1e-6).all()


# ---------------------------------------------------------------------------------------------
# the schedule
# ---------------------------------------------------------------------------------------------
def _full_adaptive():
    return AdaptiveDropout().attach(MSRResNet_details(num_feat=4))  # 16 blocks + conv_last = 17 sites


@pytest.mark.parametrize('it, switched_off', [(0, 0), (1, 0), (19999, 0), (20000, 1), (20001, 1), (39999, 1),
                                              (40000, 2), (339999, 16), (340000, 17), (500000, 17), (10**9, 17)])
def test_schedule_values(it, switched_off):
    reg = _full_adaptive()
    reg.set_iteration(it)
    assert reg.p_list == [1.0] * switched_off + [0.3] * (17 - switched_off)


def test_schedule_equals_the_reference_loop_and_resume_is_exact():
    run = _full_adaptive()  # an uninterrupted run: told every iteration 1..400k
    checks = set(range(0, 400001, 10000)) | {k * 20000 + d for k in range(18) for d in (-1, 1)}
    for it, plist in _reference_plist(400000):
        run.set_iteration(it)
        if it in checks:
            assert run.p_list == plist, it
            fresh = _full_adaptive()  # a resumed run: constructed afresh, told the iteration once
            fresh.set_iteration(it)
            assert fresh.p_list == plist, it
    # the reference re-creates plist = [0.3] * 17 on resume: at 50k it would mix in blocks 1-2 again
    resumed_reference = [0.3] * 17
    fresh = _full_adaptive()
    fresh.set_iteration(50000)
    assert fresh.p_list[:2] == [1.0, 1.0] and fresh.p_list != resumed_reference


def test_schedule_constants_are_options():
    reg = AdaptiveDropout(p_init=0.6, step=10).attach(MSRResNet_details(num_feat=4, num_block=2))
    reg.set_iteration(9)
    assert reg.p_list == [0.6, 0.6, 0.6]
    reg.set_iteration(20)
    assert reg.p_list == [1.0, 1.0, 0.6]
    reg.set_iteration(30)
    assert reg.p_list == [1.0, 1.0, 1.0]


def test_switched_off_sites_are_the_identity_in_training():
    net = _seeded(MSRResNet_details, SRRESNET)
    plain = copy.deepcopy(net)
    reg = AdaptiveDropout().attach(net)
    net.train()
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        reg.set_iteration(80000)  # every site off (4 sites)
        rng = torch.get_rng_state()
        assert torch.equal(net(x), plain(x))
        assert torch.equal(rng, torch.get_rng_state())  # no mask drawn
        reg.set_iteration(60000)  # only the last site (conv_last input) still mixes
        seen = []
        plain.conv_last.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
        plain(x)
        torch.manual_seed(0)
        out = net(x)
    feat = seen[0]
    torch.manual_seed(0)
    mask = torch.empty(2, SRRESNET['num_feat'], 1, 1).bernoulli_(0.5)
    z = 0.3 * feat + 0.7 * (feat * (mask / 0.5))
    expected = plain.conv_last(z) + F.interpolate(x, scale_factor=4, mode='bilinear', align_corners=False)
    assert torch.allclose(out, expected, atol=1e-6)
    assert not torch.allclose(out, plain(x), atol=1e-4)


# ---------------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('reg_opts', [[{'type': 'ChannelDropout', 'p': 0.7}],
                                      [{'type': 'ChannelDropout', 'p': 0.7, 'mode': 'element'}],
                                      [{'type': 'AdaptiveDropout'}]])
def test_gradients_reach_every_parameter(reg_opts):
    net = _seeded(MSRResNet_details, SRRESNET)
    plain = copy.deepcopy(net)
    regs = build_regularizers(reg_opts, net)
    for reg in regs:
        reg.set_iteration(1)
    net.train()
    x, target = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)
    torch.manual_seed(0)
    F.l1_loss(net(x), target).backward()
    F.l1_loss(plain(x), target).backward()
    for (name, param), ref in zip(net.named_parameters(), plain.parameters()):
        assert param.grad is not None and torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name
    assert not torch.equal(net.conv_last.weight.grad, plain.conv_last.weight.grad)


# ---------------------------------------------------------------------------------------------
# through the model
# ---------------------------------------------------------------------------------------------
def _srmodel_opt(network_g, regularizers=None):
    opt = {'name': 'unit', 'num_gpu': 0, 'is_train': True, 'scale': 4, 'dist': False, 'rank': 0,
           'datasets': {'train': {'name': 'toy', 'type': 'PairedImageDataset'}},
           'network_g': network_g, 'path': {},
           'train': {'ema_decay': 0.999, 'optim_g': {'type': 'Adam', 'lr': 1e-3},
                     'scheduler': {'type': 'MultiStepLR', 'milestones': [10], 'gamma': 0.5},
                     'total_iter': 10, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}}}
    if regularizers is not None:
        opt['regularizers'] = regularizers
    return opt


def test_regularizers_list_builds_and_attaches_through_srmodel():
    from realsr.models.sr_model import SRModel
    net_opt = dict(type='MSRResNet_details', **SRRESNET)
    torch.manual_seed(0)
    model = SRModel(_srmodel_opt(net_opt, [{'type': 'ChannelDropout', 'p': 0.7}]))
    (reg, ) = model.regularizers
    assert isinstance(reg, ChannelDropout) and reg.attached == [('conv_last:input', 'conv_last', 'input')]
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        train_out = model.net_g.train()(x)
        eval_out = model.net_g.eval()(x)
        assert not torch.equal(train_out, eval_out)
        assert torch.equal(eval_out, model.net_g_ema(x))  # the EMA copy starts equal, no regularizer
    model.net_g.train()
    model.feed_data({'lq': x, 'gt': torch.rand(2, 3, 32, 32)})
    model.optimize_parameters(1)
    assert 'l_pix' in model.log_dict

    # an alias arch carries its own regularizer; a list adds to it (AdaptiveDropout gets set_iteration)
    model = SRModel(_srmodel_opt(dict(type='MSRResNet_details_dropoutlast_channel07', **SRRESNET),
                                 [{'type': 'AdaptiveDropout', 'step': 3}]))
    assert [type(r) for r in model.regularizers] == [ChannelDropout, AdaptiveDropout]
    model.feed_data({'lq': x, 'gt': torch.rand(2, 3, 32, 32)})
    model.optimize_parameters(7)
    assert model.regularizers[1].p_list == [1.0, 1.0, 0.3, 0.3]


# ---------------------------------------------------------------------------------------------
# the papers' option files and ours, on CPU
# ---------------------------------------------------------------------------------------------
def _shrink_for_cpu(opt, folders, exp_name, total_iter=3):
    opt = copy.deepcopy(opt)
    opt['name'] = exp_name
    opt['num_gpu'] = 0
    opt['datasets']['train'].update(dataroot_gt=folders['train_gt'], meta_info=None, num_worker_per_gpu=0,
                                    batch_size_per_gpu=2, crop_pad_size=80, gt_size=32)
    if 'val' in opt['datasets']:
        opt['datasets']['val'].update(dataroot_gt=folders['val_gt'], dataroot_lq=folders['val_lq'])
        opt['datasets']['val'].pop('filename_tmpl', None)
        opt['val']['val_freq'] = total_iter
    opt['gt_size'] = 32
    opt['queue_size'] = 4
    opt['network_g'].update(num_feat=8, num_block=2)
    if 'RRDB' in opt['network_g']['type']:
        opt['network_g']['num_grow_ch'] = 4
    opt['path']['pretrain_network_g'] = None
    opt['train']['total_iter'] = total_iter
    opt['logger'].update(print_freq=1, save_checkpoint_freq=total_iter, use_tb_logger=False)
    return opt


def _train(opt, tmp_path, monkeypatch):
    from realsr import train
    path = tmp_path / f"{opt['name']}.yml"
    path.write_text(yaml.safe_dump(opt))
    monkeypatch.chdir(tmp_path)
    return train.main(['-opt', str(path)])


@pytest.fixture()
def tiny_data(tmp_path):
    return write_pair_folders(tmp_path / 'data', n_train=4, n_val=1, hr_size=48)


def _seed(seed_options_dir, name):
    return yaml.safe_load((seed_options_dir / name).read_text())


@pytest.mark.slow
def test_reflash_option_files_train_and_test_on_cpu(tmp_path, seed_options_dir, tiny_data, monkeypatch):
    from realsr import test as test_entry
    opt = _shrink_for_cpu(_seed(seed_options_dir, 'reflash_dropout/train_realsrresnet_withdropout.yml'), tiny_data,
                          'reflash_srresnet')
    model = _train(opt, tmp_path, monkeypatch)
    (reg, ) = model.regularizers
    assert isinstance(reg, ChannelDropout) and (reg.p, reg.mode) == (0.7, 'channel')
    assert type(model.net_g).__name__ == 'MSRResNet_details_dropoutlast_channel07'
    ckpt = tmp_path / 'experiments' / 'reflash_srresnet' / 'models' / 'net_g_3.pth'
    assert ckpt.is_file()

    # the paper's test file loads the dropout checkpoint into the plain MSRResNet_details, strictly
    test_opt = _seed(seed_options_dir, 'reflash_dropout/test_realsrresnet_withdropout.yml')
    assert test_opt['network_g']['type'] == 'MSRResNet_details' and test_opt['path']['strict_load_g'] is True
    first = test_opt['datasets']['test_01']
    first.update(dataroot_gt=tiny_data['val_gt'], dataroot_lq=tiny_data['val_lq'])
    test_opt['datasets'] = {'test_01': first}
    test_opt.update(num_gpu=0, name='reflash_test')
    test_opt['network_g'].update(num_feat=8, num_block=2)
    test_opt['path']['pretrain_network_g'] = str(ckpt)
    (tmp_path / 'test.yml').write_text(yaml.safe_dump(test_opt))
    (res, ) = test_entry.main(['-opt', str(tmp_path / 'test.yml')])
    assert res['dataset'] == 'Set5_bicubic' and math.isfinite(res['average']['psnr'])
    assert (tmp_path / 'results' / 'reflash_test').is_dir()


@pytest.mark.slow
def test_reflash_rrdb_option_file_runs_on_cpu(tmp_path, seed_options_dir, tiny_data, monkeypatch):
    opt = _shrink_for_cpu(_seed(seed_options_dir, 'reflash_dropout/train_realrrdbnet_withdropout.yml'), tiny_data,
                          'reflash_rrdb')
    model = _train(opt, tmp_path, monkeypatch)
    (reg, ) = model.regularizers
    assert isinstance(reg, ChannelDropout) and (reg.p, reg.mode) == (0.5, 'channel')
    assert isinstance(model.net_g, RRDBNet)
    assert (tmp_path / 'experiments' / 'reflash_rrdb' / 'models' / 'net_g_3.pth').is_file()


@pytest.mark.slow
def test_adaptive_dropout_option_file_runs_on_cpu(tmp_path, seed_options_dir, tiny_data, monkeypatch):
    seed = _seed(seed_options_dir, 'adaptive_dropout/train_realsrresnet_withdropout.yml')
    # unchanged, the clashing name means Reflash Dropout (documented decision)
    net = ARCH_REGISTRY.get(seed['network_g']['type'])(**{k: v for k, v in seed['network_g'].items() if k != 'type'})
    assert [type(r) for r in net.regularizers] == [ChannelDropout]
    # the documented one-line change gives Adaptive Dropout
    seed['network_g']['type'] = 'MSRResNet_details_adaptive_dropout'
    opt = _shrink_for_cpu(seed, tiny_data, 'adaptive', total_iter=3)
    model = _train(opt, tmp_path, monkeypatch)
    (reg, ) = model.regularizers
    assert isinstance(reg, AdaptiveDropout) and reg.current_iter == 3
    assert [name for _, name, _ in reg.attached] == ['body1.0.conv1', 'body2.0.conv1', 'conv_last']
    assert (tmp_path / 'experiments' / 'adaptive' / 'models' / 'net_g_3.pth').is_file()


SHIPPED = Path(REPO_ROOT) / 'options' / 'train'


@pytest.mark.slow
def test_shipped_options_train_with_and_without_channel_dropout(tmp_path, tiny_data, monkeypatch):
    base = yaml.safe_load((SHIPPED / 'train_ReflashDropout_SRResNet_x4.yml').read_text())
    assert base['regularizers'] == [{'type': 'ChannelDropout', 'p': 0.7, 'mode': 'channel',
                                     'sites': ['conv_last:input']}]
    weights = {}
    for exp, regs in (('with', base['regularizers']), ('without', None)):
        opt = _shrink_for_cpu(base, tiny_data, exp)
        if regs is None:
            del opt['regularizers']
        model = _train(opt, tmp_path, monkeypatch)
        assert [type(r) for r in model.regularizers] == ([ChannelDropout] if regs else [])
        assert math.isfinite(model.log_dict['l_pix'])
        weights[exp] = torch.load(tmp_path / 'experiments' / exp / 'models' / 'net_g_3.pth',
                                  weights_only=True)['params']
    # same seed, same data: only the dropout masks differ
    assert not torch.equal(weights['with']['conv_last.weight'], weights['without']['conv_last.weight'])


@pytest.mark.slow
@pytest.mark.parametrize('name, reg_cls', [('train_ReflashDropout_RRDBNet_x4.yml', ChannelDropout),
                                           ('train_AdaptiveDropout_SRResNet_x4.yml', AdaptiveDropout)])
def test_shipped_options_run_on_cpu(name, reg_cls, tmp_path, tiny_data, monkeypatch):
    opt = yaml.safe_load((SHIPPED / name).read_text())
    assert opt['model_type'] == 'RealESRNetModel' and opt['train']['total_iter'] == 500000
    assert opt['train']['scheduler']['periods'] == [250000, 500000]
    if reg_cls is AdaptiveDropout:
        assert opt['regularizers'][0] == {'type': 'AdaptiveDropout', 'q': 0.5, 'p_init': 0.3, 'step': 20000,
                                          'n_layers': 17, 'sites': ['body*.0.conv1:output', 'conv_last:input']}
        opt['regularizers'][0]['n_layers'] = 3  # the shrunk network: 2 blocks + conv_last
    opt = _shrink_for_cpu(opt, tiny_data, 'shipped')
    model = _train(opt, tmp_path, monkeypatch)
    assert [type(r) for r in model.regularizers] == [reg_cls]
    assert (tmp_path / 'experiments' / 'shipped' / 'models' / 'net_g_3.pth').is_file()
