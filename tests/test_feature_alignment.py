"""FeatureAlignment (Simple-Align): the loss against independent float64 computations of the
spec's formulas, identity of the features, gradients, the legacy name switch, the two-view
requirement, the Simple-Align seed option file on CPU, and reproducible RFF draws."""
import copy
import logging
import math

import numpy as np
import pytest
import torch

from conftest import write_pair_folders
from realsr.archs import build_network
from realsr.compat import simple_align_regularizers as simple_align_from_legacy_options
from realsr.regularizers import build_regularizers
from realsr.regularizers.feature_alignment import FeatureAlignment

SMALL_NET = {'type': 'MSRResNet_details', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
             'upscale': 4}


class Probe(torch.nn.Module):
    """A stand-in network whose ``conv_last`` receives the given features as they are."""

    def __init__(self):
        super().__init__()
        self.conv_last = torch.nn.Identity()

    def forward(self, x):
        return self.conv_last(x)


def _losses_for(features, **kwargs):
    net = Probe().train()
    reg = FeatureAlignment(**kwargs).attach(net)
    net(features)
    return reg.losses()


# ---------------------------------------------------------------------------------------------
# independent float64 computation of the spec's formulas (section 4b), pair by pair
# ---------------------------------------------------------------------------------------------
def _np_reg(u, v):
    first = np.mean((u - v)**2)
    second = np.mean((np.outer(u, u) - np.outer(v, v))**2)
    return first + second


def _np_rff(x, w, beta):
    """x (2, C) rows, w (F,), beta (C, F) -> (2, C*F)."""
    rows = []
    for row in x:
        m = row[:, None] * w[None, :] + beta  # (C, F)
        m = m - m.min(0, keepdims=True)
        m = m / m.max(0, keepdims=True) * (np.pi / 2)
        rows.append((np.sqrt(2.0 / len(w)) * (np.cos(m) + np.sin(m))).reshape(-1))
    return np.stack(rows)


def _np_simple_align(features, w, beta, reduction='sum'):
    f = features.reshape(features.shape[0], features.shape[1], -1).mean(2)
    b = f.shape[0] // 2
    fa, fb = f[:b] - f[:b].mean(0), f[b:] - f[b:].mean(0)
    stats = [_np_reg(fa[i], fb[i]) for i in range(b)]
    rff = []
    for i in range(b):
        z = _np_rff(np.stack([fa[i], fb[i]]), w[i], beta[i])
        rff.append(_np_reg(z[0], z[1]))
    red = np.sum if reduction == 'sum' else np.mean
    return red(stats), red(rff)


def _features_with_means(means, size=2):
    """(N, C, size, size) features whose spatial means are ``means`` (N, C), not constant."""
    means = torch.tensor(means, dtype=torch.float32)
    ripple = torch.tensor([[1., -1.], [-2., 2.]]).repeat(size // 2, size // 2)
    return means[:, :, None, None] + 0.5 * ripple


# ---------------------------------------------------------------------------------------------
# the loss
# ---------------------------------------------------------------------------------------------
def test_hand_worked_statistics_term():
    # view A pooled: [[1, 2], [3, 4]] -> centred [[-1, -1], [1, 1]]
    # view B pooled: [[0, 0], [2, 0]] -> centred [[-1, 0], [1, 0]]
    # pair 1: u = (-1, -1), v = (-1, 0): first = (0 + 1) / 2 = 0.5;
    #   u u^T = [[1, 1], [1, 1]], v v^T = [[1, 0], [0, 0]] -> second = (0 + 1 + 1 + 1) / 4 = 0.75
    # pair 2: u = (1, 1), v = (1, 0): the same, 1.25. Sum 2.5, mean 1.25.
    feats = _features_with_means([[1, 2], [3, 4], [0, 0], [2, 0]])
    out = _losses_for(feats, rff_features=0)
    assert set(out) == {'l_align'}
    assert out['l_align'].item() == pytest.approx(2.5, abs=1e-6)
    assert _losses_for(feats, rff_features=0, reduction='mean')['l_align'].item() == pytest.approx(1.25, abs=1e-6)
    assert _losses_for(feats, rff_features=0, weight=3)['l_align'].item() == pytest.approx(7.5, abs=1e-5)


def test_hand_worked_rff_term():
    # The pairs of the statistics example, w = 1 and beta = (0, pi/2) for both pairs:
    # Pair 1: u = (-1, -1) -> m = (-1, pi/2 - 1) -> normalised (0, pi/2) -> z = sqrt2 (1, 1);
    #         v = (-1, 0)  -> m = (-1, pi/2)     -> normalised (0, pi/2) -> z = sqrt2 (1, 1): 0.
    # Pair 2: u = (1, 1)   -> m = (1, 1 + pi/2)  -> (0, pi/2) -> sqrt2 (1, 1);
    #         v = (1, 0)   -> m = (1, pi/2)      -> (0, pi/2) -> sqrt2 (1, 1): 0.
    from realsr.regularizers.feature_alignment import simple_align_terms
    feats = _features_with_means([[1, 2], [3, 4], [0, 0], [2, 0]])
    w = torch.ones(2, 1)
    beta = torch.tensor([[0., math.pi / 2]] * 2).unsqueeze(2)
    stats, rff = simple_align_terms(feats, w, beta)
    assert stats.item() == pytest.approx(2.5, abs=1e-6) and rff.item() == pytest.approx(0, abs=1e-6)
    # A non-zero case, already centred (pair 2 mirrors pair 1), w = 1, beta = 0:
    # u = (0, 1, 2), v = (0, 1, 4).
    feats = _features_with_means([[0, 1, 2], [0, -1, -2], [0, 1, 4], [0, -1, -4]])
    w, beta = torch.ones(2, 1), torch.zeros(2, 3, 1)
    _, rff = simple_align_terms(feats, w, beta, reduction='sum')
    # pair 1: u -> m = (0, 1, 2)/2 * pi/2 = (0, pi/4, pi/2); v -> (0, pi/8, pi/2)
    s2 = math.sqrt(2)
    zu = [s2 * (math.cos(t) + math.sin(t)) for t in (0, math.pi / 4, math.pi / 2)]
    zv = [s2 * (math.cos(t) + math.sin(t)) for t in (0, math.pi / 8, math.pi / 2)]
    pair1 = _np_reg(np.array(zu), np.array(zv))
    # pair 2: u = (0, -1, -2) -> m - min = (2, 1, 0) -> (pi/2, pi/4, 0); v -> (4, 3, 0)/4 -> (pi/2, 3pi/8, 0)
    zu2 = [s2 * (math.cos(t) + math.sin(t)) for t in (math.pi / 2, math.pi / 4, 0)]
    zv2 = [s2 * (math.cos(t) + math.sin(t)) for t in (math.pi / 2, 3 * math.pi / 8, 0)]
    pair2 = _np_reg(np.array(zu2), np.array(zv2))
    assert pair1 > 0.01
    assert rff.item() == pytest.approx(pair1 + pair2, rel=1e-5)


@pytest.mark.parametrize('reduction', ['sum', 'mean'])
@pytest.mark.parametrize('rff_features', [1, 3])
def test_loss_matches_float64_computation(reduction, rff_features):
    torch.manual_seed(0)
    feats = torch.randn(6, 5, 3, 4)  # B = 3 pairs, C = 5
    reg = FeatureAlignment(weight=0.7, reduction=reduction, rff_features=rff_features, rff_sigma=0.5, seed=11)
    reg.set_iteration(42)
    w, beta = reg.draw_rff(3, 5)  # the draws of iteration 42
    assert w.shape == (3, rff_features) and beta.shape == (3, 5, rff_features)
    assert 0 <= beta.min() and beta.max() < 2 * math.pi
    net = Probe().train()
    reg.attach(net)
    reg.set_iteration(42)
    net(feats)
    out = reg.losses()
    stats, rff = _np_simple_align(feats.double().numpy(), w.double().numpy(), beta.double().numpy(), reduction)
    assert out['l_align'].item() == pytest.approx(0.7 * stats, rel=1e-5)
    assert out['l_align_rff'].item() == pytest.approx(0.7 * rff, rel=1e-5)
    assert reg.losses() == {}  # cleared after reading


def test_sum_is_batch_times_mean():
    torch.manual_seed(1)
    feats = torch.randn(8, 4, 2, 2)
    a = _losses_for(feats, reduction='sum', seed=3)
    b = _losses_for(feats, reduction='mean', seed=3)
    for k in ('l_align', 'l_align_rff'):
        assert a[k].item() == pytest.approx(4 * b[k].item(), rel=1e-5)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="'sum'.*'mean'"):
        FeatureAlignment(reduction='avg')
    with pytest.raises(ValueError, match='rff_sigma'):
        FeatureAlignment(rff_sigma=0)


# ---------------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------------
def test_features_and_output_unchanged_train_and_eval():
    torch.manual_seed(0)
    plain = build_network(SMALL_NET)
    hooked = copy.deepcopy(plain)
    (reg, ) = build_regularizers([{'type': 'FeatureAlignment'}], hooked)
    x = torch.rand(4, 3, 8, 8)
    for mode in ('train', 'eval'):
        getattr(plain, mode)()
        getattr(hooked, mode)()
        assert torch.equal(plain(x), hooked(x)), mode
        losses = reg.losses()
        assert (set(losses) == {'l_align', 'l_align_rff'}) if mode == 'train' else losses == {}


def test_gradients_reach_the_network():
    torch.manual_seed(0)
    net = build_network(SMALL_NET).train()
    (reg, ) = build_regularizers([{'type': 'FeatureAlignment', 'weight': 10.0}], net)
    net(torch.rand(4, 3, 8, 8))
    out = reg.losses()
    (out['l_align'] + out['l_align_rff']).backward()
    for name in ('conv_hr', 'conv_first'):
        grad = getattr(net, name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert net.conv_last.weight.grad is None  # the features are read before conv_last
    # the RFF term alone also carries gradients
    net.zero_grad()
    net(torch.rand(4, 3, 8, 8))
    reg.losses()['l_align_rff'].backward()
    assert net.conv_hr.weight.grad.abs().sum() > 0


def test_odd_batch_asks_for_two_views():
    net = build_network(SMALL_NET).train()
    (reg, ) = build_regularizers([{'type': 'FeatureAlignment'}], net)
    net(torch.rand(3, 3, 8, 8))
    with pytest.raises(ValueError, match='two independently degraded views.*must provide the two views'):
        reg.losses()
    assert FeatureAlignment.num_views == 2


# ---------------------------------------------------------------------------------------------
# the legacy switch
# ---------------------------------------------------------------------------------------------
def _srmodel_opt(name, train_name, **extra):
    opt = {'name': name, 'num_gpu': 0, 'is_train': True, 'scale': 4, 'dist': False, 'rank': 0,
           'datasets': {'train': {'name': train_name, 'type': 'PairedImageDataset'}},
           'network_g': dict(SMALL_NET), 'path': {},
           'train': {'optim_g': {'type': 'Adam', 'lr': 1e-4}, 'scheduler': {'type': 'MultiStepLR', 'milestones': [10],
                                                                         'gamma': 0.5},
                     'total_iter': 10, 'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}}}
    opt.update(extra)
    return opt


def test_legacy_switch_options():
    assert simple_align_from_legacy_options(_srmodel_opt('train_RealSRResNetx4-reg', 'DIV2K_reg', weight='1e0')) == [
        {'type': 'FeatureAlignment', 'weight': 1.0}]
    assert simple_align_from_legacy_options(_srmodel_opt('a_reg', 'b_reg')) == [
        {'type': 'FeatureAlignment', 'weight': 1.0}]  # weight defaults to 1
    assert simple_align_from_legacy_options(_srmodel_opt('train_RealSRResNetx4', 'DIV2K_reg', weight=1e3)) == []
    assert simple_align_from_legacy_options(_srmodel_opt('x_reg', 'DIV2K', weight=1e3)) == []
    explicit = _srmodel_opt('x_reg', 'DIV2K_reg', weight=5, regularizers=[{'type': 'FeatureAlignment', 'weight': 2}])
    assert simple_align_from_legacy_options(explicit) == []


@pytest.mark.parametrize('name, train_name, expected', [('run-reg', 'DIV2K_reg', 2.5), ('run', 'DIV2K_reg', None),
                                                         ('run-reg', 'DIV2K', None)])
def test_legacy_switch_builds_one_regularizer(name, train_name, expected, caplog):
    from realsr.models.sr_model import SRModel
    with caplog.at_level(logging.INFO, logger='realsr'):
        model = SRModel(_srmodel_opt(name, train_name, weight=2.5))
    found = [r for r in model.regularizers if isinstance(r, FeatureAlignment)]
    if expected is None:
        assert found == [] and model.num_views == 1
    else:
        assert len(found) == 1 and found[0].weight == expected and model.num_views == 2
        assert 'legacy switch' in caplog.text and 'regularizers:' in caplog.text


def test_explicit_and_legacy_give_one_regularizer():
    from realsr.models.sr_model import SRModel
    model = SRModel(_srmodel_opt('run-reg', 'DIV2K_reg', weight=9,
                                 regularizers=[{'type': 'FeatureAlignment', 'weight': 0.5, 'reduction': 'mean'}]))
    (reg, ) = [r for r in model.regularizers if isinstance(r, FeatureAlignment)]
    assert reg.weight == 0.5 and reg.reduction == 'mean'


# ---------------------------------------------------------------------------------------------
# resume: the RFF draws are a closed-form function of (seed, iteration)
# ---------------------------------------------------------------------------------------------
def test_rff_draws_are_reproducible_and_leave_the_global_rng_alone():
    a, b = FeatureAlignment(seed=5), FeatureAlignment(seed=5)
    for it in (1, 2, 3):  # a runs through iterations 1..3; b "resumes" at 3
        a.set_iteration(it)
        first = a.draw_rff(4, 8)
    b.set_iteration(3)
    again = b.draw_rff(4, 8)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    b.set_iteration(4)
    assert not torch.equal(b.draw_rff(4, 8)[0], first[0])
    assert not torch.equal(FeatureAlignment(seed=6).draw_rff(4, 8)[1], FeatureAlignment(seed=5).draw_rff(4, 8)[1])
    # a whole loss at the same iteration is the same, and the global stream does not move
    torch.manual_seed(0)
    feats = torch.randn(8, 8, 2, 2)
    state = torch.get_rng_state()
    losses = []
    for _ in range(2):
        net = Probe().train()
        reg = FeatureAlignment(seed=5).attach(net)
        reg.set_iteration(1234)
        net(feats)
        losses.append(reg.losses()['l_align_rff'])
    assert torch.equal(losses[0], losses[1])
    assert torch.equal(torch.get_rng_state(), state)


# ---------------------------------------------------------------------------------------------
# the paper's option file, shrunk, on CPU
# ---------------------------------------------------------------------------------------------
def test_simple_align_seed_file_runs_on_cpu(tmp_path, seed_options_dir, monkeypatch):
    from realsr import train
    from realsr.utils.yaml_util import yaml_dump, yaml_load
    folders = write_pair_folders(tmp_path / 'data', n_train=4, n_val=1, hr_size=48)
    opt = yaml_load(seed_options_dir / 'simple_align' / 'train_realsrresnet_reg.yml')
    assert 'reg' in opt['name'] and 'reg' in opt['datasets']['train']['name'] and opt['weight'] == 1.0
    opt['num_gpu'] = 0
    opt['datasets'] = {'train': opt['datasets']['train']}  # no validation sets on CPU
    opt.pop('val')
    opt['datasets']['train'].update(dataroot_gt=folders['train_gt'], meta_info=None, num_worker_per_gpu=0,
                                    batch_size_per_gpu=2, crop_pad_size=80)
    opt['gt_size'] = 32
    opt['queue_size'] = 2
    opt['network_g'].update(num_feat=4, num_block=1)
    opt['train']['total_iter'] = 3
    opt['logger'].update(print_freq=1, save_checkpoint_freq=3, use_tb_logger=False)
    (tmp_path / 'o.yml').write_text(yaml_dump(opt))
    monkeypatch.chdir(tmp_path)
    model = train.main(['-opt', str(tmp_path / 'o.yml')])
    (reg, ) = [r for r in model.regularizers if isinstance(r, FeatureAlignment)]
    assert reg.weight == 1.0 and model.num_views == 2
    assert model.lq.shape == (4, 3, 8, 8) and model.gt.shape == (4, 3, 32, 32)
    assert torch.equal(model.gt[:2], model.gt[2:])  # the same GT crops ...
    assert not torch.equal(model.lq[:2], model.lq[2:])  # ... degraded independently
    assert {'l_align', 'l_align_rff', 'l_pix'} <= set(model.log_dict)
    exp = tmp_path / 'experiments' / opt['name']
    log = ''.join(p.read_text() for p in exp.glob('train_*.log'))
    assert 'l_align:' in log and 'legacy switch' in log
    assert (exp / 'models' / 'net_g_3.pth').is_file()


@pytest.mark.parametrize('with_reg', [True, False])
def test_shipped_simple_align_options_run_on_cpu(with_reg, tmp_path, monkeypatch):
    """options/train/train_SimpleAlign_SRResNet_x4.yml, shrunk, with and without its regularizer."""
    from conftest import REPO_ROOT
    from realsr import train
    from realsr.utils.yaml_util import yaml_dump, yaml_load
    folders = write_pair_folders(tmp_path / 'data', n_train=4, n_val=1, hr_size=48)
    opt = yaml_load(REPO_ROOT / 'options' / 'train' / 'train_SimpleAlign_SRResNet_x4.yml')
    assert [r['type'] for r in opt['regularizers']] == ['FeatureAlignment']
    if not with_reg:
        del opt['regularizers']
    opt.update(num_gpu=0, gt_size=32)
    opt['datasets']['train'].update(dataroot_gt=folders['train_gt'], num_worker_per_gpu=0, batch_size_per_gpu=2,
                                    crop_pad_size=80)
    opt['datasets']['val'].update(dataroot_gt=folders['val_gt'], dataroot_lq=folders['val_lq'], filename_tmpl='{}')
    opt['network_g'].update(num_feat=4, num_block=1)
    opt['train']['total_iter'] = 2
    opt['val']['val_freq'] = 2
    opt['logger'].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    (tmp_path / 'o.yml').write_text(yaml_dump(opt))
    monkeypatch.chdir(tmp_path)
    model = train.main(['-opt', str(tmp_path / 'o.yml')])
    assert model.num_views == (2 if with_reg else 1)
    assert ('l_align' in model.log_dict) == with_reg and 'l_pix' in model.log_dict


def test_two_view_regularizer_on_paired_training_is_refused():
    """SRModel on paired data has one LQ per GT: FeatureAlignment would compare unrelated images."""
    from realsr.models.sr_model import SRModel
    opt = {'num_gpu': 0, 'is_train': True, 'scale': 4, 'name': 'paired',
           'network_g': {'type': 'MSRResNet_details', 'num_feat': 8, 'num_block': 2, 'upscale': 4},
           'regularizers': [{'type': 'FeatureAlignment', 'weight': 1.0}],
           'train': {'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'pixel_opt': {'type': 'L1Loss'}, 'total_iter': 1},
           'datasets': {'train': {'name': 'pairs'}}}
    model = SRModel(opt)
    with pytest.raises(ValueError, match='independently degraded views'):
        model.feed_data({'lq': torch.rand(4, 3, 8, 8), 'gt': torch.rand(4, 3, 32, 32)})
