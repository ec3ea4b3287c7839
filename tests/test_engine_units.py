"""Unit tests of the training engine: schedulers, warm-up, losses, EMA, checkpoint files,
network loading, tiled inference, the sampler and the RNG capture."""
import math
import os
import random
from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from realsr.runtime import checkpoint
from realsr.runtime.ema import update_ema
from realsr.runtime.rng import capture_rng_state, preserved_rng, restore_rng_state
from realsr.models.lr_scheduler import CosineAnnealingRestartLR, MultiStepRestartLR, build_scheduler
from realsr.registry import LOSS_REGISTRY


def _optimizer(lr=1.0):
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


def _lrs(scheduler, n):
    """lr seen at iterations 1..n with BasicSR's stepping (a step from the second on)."""
    out = []
    for it in range(1, n + 1):
        if it > 1:
            scheduler.step()
        out.append(scheduler.optimizer.param_groups[0]['lr'])
    return out


# -- schedulers -------------------------------------------------------------------------------
def test_multistep_restart_values():
    sched = MultiStepRestartLR(_optimizer(1.0), milestones=[3, 5, 5], gamma=0.5, restarts=[0, 6],
                               restart_weights=[1, 0.8])
    lrs = _lrs(sched, 8)
    # last_epoch = it - 1: milestone 3 at it 4 (x0.5), milestone 5 twice at it 6 (x0.25), restart 6 at it 7
    assert lrs == pytest.approx([1, 1, 1, 0.5, 0.5, 0.125, 0.8, 0.8])


def test_multisteplr_is_the_restart_alias():
    sched = build_scheduler(_optimizer(2.0), {'type': 'MultiStepLR', 'milestones': [2], 'gamma': 0.1})
    assert isinstance(sched, MultiStepRestartLR)
    assert _lrs(sched, 4) == pytest.approx([2, 2, 0.2, 0.2])


def test_cosine_annealing_restart_formula():
    base, eta_min = 1.0, 0.1
    periods, weights = [4, 6], [1, 0.5]
    sched = CosineAnnealingRestartLR(_optimizer(base), periods=periods, restart_weights=weights, eta_min=eta_min)
    lrs = _lrs(sched, 10)
    for it, lr in enumerate(lrs, start=1):
        t = it - 1
        idx, start = (0, 0) if t <= 4 else (1, 4)
        expect = eta_min + weights[idx] * 0.5 * (base - eta_min) * (1 + math.cos(math.pi * (t - start) / periods[idx]))
        assert lr == pytest.approx(expect), it


def test_cosine_past_last_period_is_explained():
    sched = CosineAnnealingRestartLR(_optimizer(), periods=[2])
    sched.step()
    sched.step()
    with pytest.raises(ValueError, match='periods'):
        sched.step()


def test_scheduler_state_resumes_exactly_and_loads_weights_only(tmp_path):
    sched = MultiStepRestartLR(_optimizer(1.0), milestones=[2, 4], gamma=0.5)
    _lrs(sched, 3)
    checkpoint.atomic_save({'schedulers': [sched.state_dict()]}, tmp_path / 'x.state')
    state = checkpoint.load_training_state(str(tmp_path / 'x.state'))  # holds a Counter
    assert isinstance(state['schedulers'][0]['milestones'], Counter)
    fresh = MultiStepRestartLR(_optimizer(1.0), milestones=[2, 4], gamma=0.5)
    fresh.load_state_dict(state['schedulers'][0])
    fresh.optimizer.param_groups[0]['lr'] = sched.optimizer.param_groups[0]['lr']
    for _ in range(3):
        sched.step()
        fresh.step()
        assert fresh.optimizer.param_groups[0]['lr'] == sched.optimizer.param_groups[0]['lr']


def test_linear_warmup_matches_basicsr():
    from realsr.models.base_model import BaseModel
    model = BaseModel({'num_gpu': 0, 'train': {'scheduler': {'type': 'MultiStepLR', 'milestones': [100]}}})
    model.optimizers = [torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=1e-3)]
    model.setup_schedulers()
    seen = []
    for it in range(1, 7):
        model.update_learning_rate(it, warmup_iter=4)
        seen.append(model.get_current_learning_rate()[0])
    # initial_lr * it / warmup during warm-up; BasicSR then keeps the last warm-up value with
    # MultiStepRestartLR (its get_lr only changes the lr at milestones and restarts)
    assert seen == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 7.5e-4, 7.5e-4, 7.5e-4])


# -- losses -----------------------------------------------------------------------------------
def test_pixel_losses_by_hand():
    pred = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])
    target = torch.zeros_like(pred)
    assert LOSS_REGISTRY.get('L1Loss')(loss_weight=2.0)(pred, target).item() == pytest.approx(2 * 7 / 4)
    assert LOSS_REGISTRY.get('MSELoss')(reduction='sum')(pred, target).item() == pytest.approx(21)
    charb = LOSS_REGISTRY.get('CharbonnierLoss')(eps=1e-6)(pred, target).item()
    assert charb == pytest.approx(sum(math.sqrt(v * v + 1e-6) for v in (0, 1, 2, 4)) / 4)
    weight = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    assert LOSS_REGISTRY.get('L1Loss')()(pred, target, weight).item() == pytest.approx(4 / 2)
    with pytest.raises(ValueError, match="reduction must be one of"):
        LOSS_REGISTRY.get('L1Loss')(reduction='avg')


# -- EMA --------------------------------------------------------------------------------------
def test_ema_averages_parameters_and_buffers():
    net, ema = nn.BatchNorm2d(2), nn.BatchNorm2d(2)
    update_ema(ema, net, 0)
    with torch.no_grad():
        net.weight.fill_(3.0)
        net.running_mean.fill_(1.0)
    update_ema(ema, net, 0.9)
    assert torch.allclose(ema.weight, torch.full((2, ), 0.9 * 1 + 0.1 * 3))
    assert torch.allclose(ema.running_mean, torch.full((2, ), 0.1))  # buffers are averaged too
    assert ema.num_batches_tracked.item() == net.num_batches_tracked.item()  # integer buffers copied


def test_ema_leaves_equal_entries_bit_identical():
    net = nn.Conv2d(3, 3, 3)
    ema = nn.Conv2d(3, 3, 3)
    update_ema(ema, net, 0)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    update_ema(ema, net, 0.999)
    for k, v in ema.state_dict().items():
        assert torch.equal(v, before[k])


# -- checkpoint files -------------------------------------------------------------------------
def test_atomic_save_never_leaves_half_a_file(tmp_path, monkeypatch):
    path = tmp_path / 'models' / 'net_g_1.pth'
    checkpoint.atomic_save({'params': {'w': torch.ones(2)}}, path)

    def broken_save(obj, f):
        f.write(b'partial bytes')
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', broken_save)
    monkeypatch.setattr(checkpoint.time, 'sleep', lambda s: None)
    with pytest.raises(OSError, match='disk full'):
        checkpoint.atomic_save({'params': {'w': torch.zeros(2)}}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)['params']['w'], torch.ones(2))  # old file intact
    assert os.listdir(tmp_path / 'models') == ['net_g_1.pth']  # no temporary file left


def test_find_resumable_state_skips_states_without_network(tmp_path):
    states, models = tmp_path / 'training_states', tmp_path / 'models'
    states.mkdir()
    models.mkdir()
    for it in (5, 10, 20):
        torch.save({'iter': it, 'epoch': 0, 'optimizers': [], 'schedulers': []}, states / f'{it}.state')
    for it in (5, 10):
        torch.save({'params': {}}, models / f'net_g_{it}.pth')
    path, state, skipped = checkpoint.find_resumable_state(str(states), str(models))
    assert path == str(states / '10.state') and state['iter'] == 10
    assert len(skipped) == 1 and 'net_g_20' in skipped[0]
    assert checkpoint.find_resumable_state(str(tmp_path / 'none'), str(models)) == (None, None, [])


class _Tiny(nn.Module):

    def __init__(self, ch=4):
        super().__init__()
        self.conv = nn.Conv2d(3, ch, 3)
        self.head = nn.Conv2d(ch, 3, 1)


def test_load_network_param_key_fallbacks_and_prefixes(tmp_path):
    src = _Tiny()
    sd = {'module.' + k: v for k, v in src.state_dict().items()}
    torch.save({'params': sd}, tmp_path / 'a.pth')
    torch.save(src.state_dict(), tmp_path / 'bare.pth')
    for name, key in (('a.pth', 'params_ema'), ('a.pth', 'params'), ('bare.pth', 'params'), ('bare.pth', None)):
        dst = _Tiny()
        checkpoint.load_network(dst, str(tmp_path / name), strict=True, param_key=key)
        assert torch.equal(dst.conv.weight, src.conv.weight), (name, key)
    torch.save({'other': src.state_dict()}, tmp_path / 'b.pth')
    with pytest.raises(KeyError, match="holds \\['other'\\]"):
        checkpoint.load_network(_Tiny(), str(tmp_path / 'b.pth'))
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        checkpoint.load_network(_Tiny(), str(tmp_path / 'missing.pth'))


def test_load_network_strict_mismatch_names_keys_and_nonstrict_ignores_shapes(tmp_path):
    torch.save({'params': _Tiny(ch=8).state_dict()}, tmp_path / 'wide.pth')
    with pytest.raises(RuntimeError) as exc:
        checkpoint.load_network(_Tiny(ch=4), str(tmp_path / 'wide.pth'), strict=True)
    assert 'shape of conv.weight: file (8, 3, 3, 3) vs network (4, 3, 3, 3)' in str(exc.value)
    partial = _Tiny(ch=4).state_dict()
    partial.pop('head.bias')
    partial['extra.weight'] = torch.zeros(1)
    torch.save({'params': partial}, tmp_path / 'partial.pth')
    with pytest.raises(RuntimeError) as exc:
        checkpoint.load_network(_Tiny(ch=4), str(tmp_path / 'partial.pth'), strict=True)
    assert 'missing keys (1): head.bias' in str(exc.value) and 'unexpected keys (1): extra.weight' in str(exc.value)
    # non-strict (BasicSR's .ignore): mismatched shapes are skipped, the rest is loaded
    net = _Tiny(ch=4)
    before = net.conv.weight.clone()
    mixed = _Tiny(ch=8).state_dict()
    mixed['head.weight'] = torch.full((3, 4, 1, 1), 0.5)
    mixed['head.bias'] = torch.full((3, ), 0.25)
    torch.save({'params': mixed}, tmp_path / 'mixed.pth')
    checkpoint.load_network(net, str(tmp_path / 'mixed.pth'), strict=False)
    assert torch.equal(net.conv.weight, before)
    assert torch.equal(net.head.bias, torch.full((3, ), 0.25))


def test_saved_files_use_basicsr_layout(tmp_path):
    net, ema = _Tiny(), _Tiny()
    ddp_like = nn.DataParallel(net)
    checkpoint.save_network([ddp_like, ema], tmp_path / 'net_g_3.pth', ['params', 'params_ema'])
    ckpt = torch.load(tmp_path / 'net_g_3.pth', weights_only=True)
    assert list(ckpt) == ['params', 'params_ema']
    assert list(ckpt['params']) == list(net.state_dict())  # no 'module.' prefix


# -- tiled inference --------------------------------------------------------------------------
def test_tiled_forward_equals_untiled():
    from realsr.registry import ARCH_REGISTRY
    from realsr.utils.tiling import tiled_forward
    torch.manual_seed(0)
    net = ARCH_REGISTRY.get('MSRResNet')(num_feat=8, num_block=2, upscale=4).eval()
    x = torch.rand(1, 3, 37, 50)
    with torch.no_grad():
        full = net(x)
    # receptive-field radius of this net in LR pixels is 1 + 2*2 + 1 + 1 = 7 (+1 for the bilinear skip)
    tiled = tiled_forward(net, x, tile_size=16, tile_pad=10)
    assert tiled.shape == full.shape
    assert torch.allclose(tiled, full, atol=1e-5)
    # with too little context the seams show: the test can tell
    assert not torch.allclose(tiled_forward(net, x, tile_size=16, tile_pad=0), full, atol=1e-5)


# -- sampler and RNG --------------------------------------------------------------------------
def test_enlarged_sampler_order_and_resume_offset():
    from realsr.data.sampler import EnlargedSampler
    data = list(range(10))
    sampler = EnlargedSampler(data, num_replicas=2, rank=1, ratio=3)
    assert sampler.num_samples == 15 and sampler.total_size == 30
    sampler.set_epoch(4)
    items = list(sampler)
    g = torch.Generator()
    g.manual_seed(4)
    expect = [v % 10 for v in torch.randperm(30, generator=g).tolist()][1::2]
    assert [i for i, _ in items] == expect  # BasicSR's order
    assert len({s for _, s in items}) == len(items)  # every sample has its own seed
    sampler.set_epoch(4, start=6)
    assert list(sampler) == items[6:] and len(sampler) == 9


def test_seeded_dataset_is_reproducible_and_keeps_main_rng():
    from realsr.data.sampler import SeededDataset, sample_generator

    class Draw:  # torch draws go through the per-sample generator, never the default one

        def __len__(self):
            return 3

        def __getitem__(self, i):
            return random.random(), float(np.random.rand()), float(torch.rand(1, generator=sample_generator()))

    ds = SeededDataset(Draw())
    torch.manual_seed(5)
    random.seed(5)
    before = (random.random(), torch.rand(1).item())
    torch.manual_seed(5)
    random.seed(5)
    a = ds[(0, 123)]
    after = (random.random(), torch.rand(1).item())
    assert a == ds[(2, 123)] and a != ds[(0, 124)]
    assert after == before  # the main process's generators were not disturbed


def test_rng_capture_restore_roundtrip(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    state = capture_rng_state()
    first = (random.random(), np.random.rand(), torch.rand(2))
    checkpoint.atomic_save({'rng': state}, tmp_path / 'r.state')
    restore_rng_state(checkpoint.load_training_state(str(tmp_path / 'r.state'))['rng'])
    second = (random.random(), np.random.rand(), torch.rand(2))
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])
    torch.manual_seed(3)
    random.seed(3)
    expected = (torch.rand(2), random.random())
    torch.manual_seed(3)
    random.seed(3)
    with preserved_rng():  # what runs inside (validation) does not shift the streams
        torch.rand(100)
        random.random()
    got = (torch.rand(2), random.random())
    assert torch.equal(got[0], expected[0]) and got[1] == expected[1]


def test_best_metric_tracking_higher_and_lower():
    from realsr.engine.validator import update_best_metric
    best = {}
    assert update_best_metric(best, 'Set5', 'psnr', 'higher', 30.0, 100)
    assert not update_best_metric(best, 'Set5', 'psnr', 'higher', 29.0, 200)
    assert update_best_metric(best, 'Set5', 'niqe', 'lower', 6.0, 100)
    assert update_best_metric(best, 'Set5', 'niqe', 'lower', 5.5, 200)
    assert not update_best_metric(best, 'Set5', 'niqe', 'lower', 5.9, 300)
    assert best['Set5']['psnr'] == {'better': 'higher', 'val': 30.0, 'iter': 100}
    assert best['Set5']['niqe'] == {'better': 'lower', 'val': 5.5, 'iter': 200}


def test_srmodel_tiled_test_equals_whole_image():
    from realsr.models.sr_model import SRModel
    opt = {'num_gpu': 0, 'is_train': False, 'scale': 4,
           'network_g': {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1, 'upscale': 4}}
    torch.manual_seed(0)
    model = SRModel(opt)
    lq = torch.rand(1, 3, 30, 41)
    model.feed_data({'lq': lq})
    model.test()
    whole = model.output
    model.opt['val'] = {'tile': {'tile_size': 12, 'tile_pad': 8}}
    model.feed_data({'lq': lq})
    model.test()
    assert model.output.shape == whole.shape == (1, 3, 120, 164)
    assert torch.allclose(model.output, whole, atol=1e-5)
