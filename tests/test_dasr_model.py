"""DASR / CDDNet models: the LDL artifact map, loss assembly, the pool keeping the degradation
parameters with their images, generator init from an MSRResNet checkpoint, save/resume of every
network, the test path, and the option files (CDDNet's own and ours) running shrunk on CPU."""
import copy
import logging

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from realsr.archs.dasr_arch import MSRResNetDynamic
from realsr.archs.srresnet_arch import MSRResNet
from realsr.losses.ldl_loss import get_refined_artifact_map
from realsr.models.dasr_model import DASRModel, SRGANDynamicModel, msrresnet_block_count
from realsr.registry import MODEL_REGISTRY

NUM_PARAMS = 33
TINY_G = dict(type='MSRResNetDynamic', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=2, num_models=5, upscale=4)


# -- the LDL artifact map ------------------------------------------------------------------------
def _numpy_artifact_map(gt, out, ema, ksize):
    """The map computed independently, image by image, with plain numpy loops."""
    r = np.abs(gt - out).sum(1)  # (b, h, w)
    r_ema = np.abs(gt - ema).sum(1)
    pad = (ksize - 1) // 2
    result = np.zeros_like(r)
    for i in range(r.shape[0]):
        patch = np.var(r[i], ddof=1)**0.2
        padded = np.pad(r[i], pad, mode='reflect')
        for y in range(r.shape[1]):
            for x in range(r.shape[2]):
                result[i, y, x] = patch * np.var(padded[y:y + ksize, x:x + ksize], ddof=1)
    result[r < r_ema] = 0
    return result[:, None]


@pytest.mark.parametrize('ksize', [3, 7])
def test_ldl_artifact_map_matches_a_hand_computation(ksize):
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 3, 6, 7, generator=g, dtype=torch.float64)
    out = gt + 0.2 * torch.randn(2, 3, 6, 7, generator=g, dtype=torch.float64)
    ema = gt + 0.2 * torch.randn(2, 3, 6, 7, generator=g, dtype=torch.float64)
    expected = _numpy_artifact_map(gt.numpy(), out.numpy(), ema.numpy(), ksize)
    got = get_refined_artifact_map(gt, out, ema, ksize)
    assert got.shape == (2, 1, 6, 7)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)
    zeroed = (expected == 0).mean()
    assert 0.1 < zeroed < 0.9  # the EMA comparison both keeps and drops pixels here


def test_ldl_artifact_map_values_on_a_tiny_case():
    # one channel, 4x4, ksize 3: residual r = |out| (gt 0), known values worked by hand
    gt = torch.zeros(1, 1, 4, 4)
    out = torch.tensor([[0., 0., 0., 0.], [0., 4., 0., 0.], [0., 0., 0., 0.], [0., 0., 0., 0.]]).view(1, 1, 4, 4)
    ema = gt.clone()  # the EMA is exact: net_g is never better than it, nothing is zeroed
    m = get_refined_artifact_map(gt, out, ema, 3)
    # patch weight: var over 16 values, one of them 4: mean 0.25, unbiased var = (16 - 16*0.0625)/15 = 1
    # the window centred at (1,1) holds the 4 once and eight zeros: var = (16 - 16/9) / 8 = 16/9
    assert m[0, 0, 1, 1].item() == pytest.approx(16 / 9)
    # (3,3): reflect padding never brings the 4 in (its window spans rows/cols 2..3 and their mirrors)
    assert m[0, 0, 3, 3].item() == 0
    # (0,0): reflect padding mirrors row/col 1 into -1, so the window holds the 4 four times
    assert m[0, 0, 0, 0].item() == pytest.approx((4 * 16 - 9 * (16 / 9)**2) / 8)
    ema_worse = gt + 5  # net_g beats the EMA everywhere: no pixel is an artifact
    assert get_refined_artifact_map(gt, out, ema_worse, 3).abs().sum() == 0


def test_ldl_artifact_map_passes_gradients_through_the_weights():
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(1, 3, 8, 8, generator=g)
    out = (gt + 0.3 * torch.randn(1, 3, 8, 8, generator=g)).requires_grad_()
    ema = gt.clone()  # an exact EMA: nothing masked
    get_refined_artifact_map(gt, out, ema, 7).sum().backward()
    assert out.grad is not None and out.grad.abs().sum() > 0  # not detached, as in the reference


# -- a tiny DASRModel with a fake degradation -----------------------------------------------------
class AvgPoolDegradation(torch.nn.Module):
    """Stands in for DASRDegradation: LQ = area downscale, params drawn from the generator."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale
        self.last_space = None

    def forward(self, gt, generator):
        self.last_space = 'weak_degrade_one_stage'
        params = torch.rand(gt.size(0), NUM_PARAMS, generator=generator, device=gt.device)
        return F.avg_pool2d(gt, self.scale), params


class IndexDegradation(torch.nn.Module):
    """Every sample gets a running index k; its LQ and every entry of its params equal k/1000."""

    def __init__(self, scale):
        super().__init__()
        self.scale = scale
        self.next_index = 1
        self.last_space = 'severe_degrade_two_stage'

    def forward(self, gt, generator):
        b, c, h, w = gt.shape
        value = (torch.arange(b, dtype=torch.float32) + self.next_index) / 1000
        self.next_index += b
        lq = value.view(b, 1, 1, 1).expand(b, c, h // self.scale, w // self.scale).clone()
        return lq, value.view(b, 1).expand(b, NUM_PARAMS).clone()


def tiny_opt(tmp_path, model_type='DASRModel', **train_overrides):
    opt = {
        'name': 'tiny', 'model_type': model_type, 'scale': 4, 'num_gpu': 0, 'manual_seed': 0, 'is_train': True,
        'gt_size': 32, 'queue_size': 4,
        'datasets': {'train': {'name': 'fake', 'type': 'DASRDataset', 'batch_size_per_gpu': 2, 'crop_pad_size': 80}},
        'network_g': dict(TINY_G, init_dynamic=True),
        'network_p': {'type': 'Degradation_Predictor', 'in_nc': 3, 'nf': 8, 'num_params': NUM_PARAMS,
                      'num_networks': 5},
        'network_d': {'type': 'UNetDiscriminatorSN', 'num_in_ch': 3, 'num_feat': 4, 'skip_connection': True},
        'path': {'models': str(tmp_path / 'models'), 'training_states': str(tmp_path / 'training_states')},
        'train': {
            'ema_decay': 0.999,
            'optim_g': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
            'optim_d': {'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
            'pixel_opt': {'type': 'CharbonnierLoss', 'loss_weight': 1.0},
            'regress_opt': {'type': 'CharbonnierLoss', 'loss_weight': 1.0},
            'artifacts_opt': {'type': 'CharbonnierLoss', 'loss_weight': 1.0},
            'gan_opt': {'type': 'GANLoss', 'gan_type': 'vanilla', 'loss_weight': 0.1},
            # no perceptual_opt: the VGG19 weights are not available offline
        },
    }
    opt['train'].update(train_overrides)
    return opt


@pytest.fixture()
def fake_degradation(monkeypatch):
    """Make DASRModel use the given fake degradation class (AvgPoolDegradation by default)."""
    chosen = {'cls': AvgPoolDegradation}
    monkeypatch.setattr(DASRModel, 'build_degradation', lambda self, opt, train_opt: chosen['cls'](opt['scale']))
    return chosen


def gt_batch(seed, b=2, size=48):
    g = torch.Generator().manual_seed(seed)
    return {'gt': torch.rand(b, 3, size, size, generator=g)}


def test_models_are_registered():
    assert MODEL_REGISTRY.get('SRGANDynamicModel') is SRGANDynamicModel
    assert MODEL_REGISTRY.get('DASRModel') is DASRModel


def test_loss_assembly_and_optimizer_covers_net_p(tmp_path, fake_degradation):
    model = DASRModel(tiny_opt(tmp_path))
    g_params = {id(p) for group in model.optimizer_g.param_groups for p in group['params']}
    assert {id(p) for p in model.net_p.parameters()} <= g_params
    assert {id(p) for p in model.net_g.parameters()} <= g_params
    assert not {id(p) for p in model.net_d.parameters()} & g_params
    p_before = copy.deepcopy(model.net_p.state_dict())
    for it in (1, 2):
        model.feed_data(gt_batch(it))
        model.optimize_parameters(it)
    assert model.lq.shape == (2, 3, 8, 8) and model.gt.shape == (2, 3, 32, 32)
    assert model.degradation_space == 'weak_degrade_one_stage'
    assert set(model.log_dict) == {'grad_norm_g', 'grad_norm_d', 'l_pix', 'l_regression', 'l_g_artifacts', 'l_g_gan',
                                   'l_d_real', 'l_d_fake',
                                   'out_d_real', 'out_d_fake'}
    assert all(torch.isfinite(torch.as_tensor(v)) for v in model.log_dict.values())
    assert any(not torch.equal(p_before[k], v) for k, v in model.net_p.state_dict().items())  # net_p trained
    # the EMA moved towards net_g but is not net_g
    ema, net = model.net_g_ema.state_dict(), model.net_g.state_dict()
    assert any(not torch.equal(ema[k], net[k]) for k in net)


def test_generator_steps_wait_for_net_d_init_iters(tmp_path, fake_degradation):
    model = DASRModel(tiny_opt(tmp_path, net_d_init_iters=1))
    model.feed_data(gt_batch(0))
    model.optimize_parameters(1)
    assert set(model.log_dict) == {'l_d_real', 'l_d_fake', 'out_d_real', 'out_d_fake', 'grad_norm_d'}  # no G step
    model.optimize_parameters(2)
    assert 'l_regression' in model.log_dict and 'l_g_gan' in model.log_dict


def test_artifact_loss_needs_the_ema(tmp_path, fake_degradation):
    with pytest.raises(ValueError, match='ema_decay'):
        DASRModel(tiny_opt(tmp_path, ema_decay=0))


def test_pool_keeps_params_with_their_images(tmp_path, fake_degradation):
    fake_degradation['cls'] = IndexDegradation
    model = DASRModel(tiny_opt(tmp_path, queue_size=8))
    seen_old = False
    for it in range(30):
        first = model.degradation.next_index
        # the GT of sample k is the constant k/1000 as well (USM leaves a flat image unchanged)
        gt = ((torch.arange(2, dtype=torch.float32) + first) / 1000).view(2, 1, 1, 1).expand(2, 3, 48, 48)
        model.feed_data({'gt': gt.clone()})
        lq_id = model.lq.mean(dim=(1, 2, 3))
        assert torch.allclose(model.degradation_params, lq_id[:, None].expand(2, NUM_PARAMS), atol=1e-6)
        assert torch.allclose(model.gt.mean(dim=(1, 2, 3)), lq_id, atol=1e-5)
        seen_old |= bool((lq_id * 1000 < first - 0.5).any())
    assert seen_old  # the pool did hand out pairs from earlier batches


def test_gt_usm_keys_are_logged_as_ignored(tmp_path, fake_degradation, caplog):
    opt = tiny_opt(tmp_path)
    opt.update(l1_gt_usm=True, gan_gt_usm=False)
    with caplog.at_level(logging.INFO, logger='realsr'):
        DASRModel(opt)
    assert any('l1_gt_usm, gan_gt_usm ignored' in r.getMessage() for r in caplog.records)


def test_cross_dropout_regularizer_acts_on_the_dynamic_generator(tmp_path, fake_degradation):
    opt = tiny_opt(tmp_path)
    opt['network_g']['cross_dropout'] = False  # the CDDNet layout's own; this one is listed explicitly
    opt['regularizers'] = [{'type': 'CrossDropout', 'p_col': 0.5, 'p_row': 0.2, 'sites': ['conv_last:input']}]
    model = DASRModel(opt)
    assert [name for _, name, _ in model.regularizers[0].attached] == ['conv_last']
    lq = torch.rand(2, 3, 8, 8)
    w = torch.full((2, 5), 0.2)
    with torch.no_grad():
        a, b = model.net_g(lq, w), model.net_g(lq, w)  # training mode: stripes dropped at random
        assert not torch.equal(a, b)
        model.net_g.eval()
        assert torch.equal(model.net_g(lq, w), model.net_g(lq, w))
        model.net_g.train()
    model.feed_data(gt_batch(0))
    model.optimize_parameters(1)
    assert 'l_pix' in model.log_dict


# -- generator init from checkpoints ------------------------------------------------------------
def _msrresnet_file(path, num_block=2, with_ema=False, seed=0):
    torch.manual_seed(seed)
    net = MSRResNet(num_feat=8, num_block=num_block, upscale=4)
    ckpt = {'params': net.state_dict()}
    if with_ema:
        ckpt['params_ema'] = {k: v + 1 for k, v in net.state_dict().items()}
    torch.save(ckpt, path)
    return ckpt


@pytest.mark.parametrize('arch', ['MSRResNetDynamic', 'MSRResNetDynamicDASR'])
def test_msrresnet_checkpoint_initialises_net_g_and_its_ema(tmp_path, fake_degradation, arch):
    ckpt = _msrresnet_file(tmp_path / 'msrresnet.pth', with_ema=True)
    opt = tiny_opt(tmp_path)
    opt['network_g'] = dict(TINY_G, type=arch)  # no init_dynamic: the checkpoint must do it
    opt['path'].update(pretrain_network_g=str(tmp_path / 'msrresnet.pth'), strict_load_g=False)
    model = DASRModel(opt)
    kwargs = {k: v for k, v in TINY_G.items() if k != 'type'}
    kwargs['with_rc'] = arch == 'MSRResNetDynamic'
    expected = MSRResNetDynamic.from_msrresnet(ckpt['params'], **kwargs).state_dict()
    expected_ema = MSRResNetDynamic.from_msrresnet(ckpt['params_ema'], **kwargs).state_dict()
    dynamic = [k for k in expected if not k.startswith('RC.')]
    assert len(dynamic) == len(ckpt['params'])
    for k in dynamic:
        torch.testing.assert_close(model.net_g.state_dict()[k], expected[k], rtol=0, atol=0)
        torch.testing.assert_close(model.net_g_ema.state_dict()[k], expected_ema[k], rtol=0, atol=0)
    assert model.net_g.dynamic_initialized and model.net_g_ema.dynamic_initialized


def test_msrresnet_checkpoint_without_params_ema_gives_the_ema_params(tmp_path, fake_degradation):
    ckpt = _msrresnet_file(tmp_path / 'msrresnet.pth')
    opt = tiny_opt(tmp_path)
    opt['network_g'] = dict(TINY_G)
    opt['path']['pretrain_network_g'] = str(tmp_path / 'msrresnet.pth')
    model = DASRModel(opt)
    ema_first = model.net_g_ema.state_dict()['conv_first.weight']
    torch.testing.assert_close(ema_first[3], ckpt['params']['conv_first.weight'])


def test_msrresnet_block_count_mismatch_is_named(tmp_path, fake_degradation, caplog):
    _msrresnet_file(tmp_path / 'msrresnet.pth', num_block=2)
    assert msrresnet_block_count(torch.load(tmp_path / 'msrresnet.pth')['params']) == 2
    opt = tiny_opt(tmp_path)
    opt['network_g'] = dict(TINY_G, num_block=3)
    opt['path'].update(pretrain_network_g=str(tmp_path / 'msrresnet.pth'), strict_load_g=False)
    with pytest.raises(ValueError, match=r'2 residual blocks.*num_block is 3.*num_block: 2.*16'):
        DASRModel(copy.deepcopy(opt))
    # explicit opt-in: the third block keeps its random init, with a warning
    opt['network_g']['init_dynamic'] = True
    with caplog.at_level(logging.WARNING, logger='realsr'):
        model = DASRModel(opt)
    assert any('blocks 2-2 keep their random init' in r.getMessage() for r in caplog.records)
    sd = torch.load(tmp_path / 'msrresnet.pth')['params']
    assert torch.equal(model.net_g.state_dict()['body.1.conv1.weight'][0], sd['body.1.conv1.weight'])


def test_uninitialised_dynamic_weights_fail_at_construction(tmp_path, fake_degradation):
    opt = tiny_opt(tmp_path)
    opt['network_g'] = dict(TINY_G)  # neither a checkpoint nor init_dynamic
    with pytest.raises(RuntimeError, match='never initialised.*pretrain_network_g.*init_dynamic'):
        DASRModel(opt)
    test_opt = {k: v for k, v in opt.items() if k not in ('train', 'network_d')}
    test_opt.update(is_train=False, model_type='SRGANDynamicModel')
    with pytest.raises(RuntimeError, match='never initialised'):
        SRGANDynamicModel(test_opt)


# -- save, resume, test -------------------------------------------------------------------------
def test_save_and_resume_restore_every_network_and_the_pool(tmp_path, fake_degradation):
    from realsr.engine.trainer import load_resume_state
    opt = tiny_opt(tmp_path)
    model = DASRModel(copy.deepcopy(opt))
    for it in range(1, 5):  # fills the pool (4) and draws from it
        model.feed_data(gt_batch(it))
        model.optimize_parameters(it)
    model.save(0, 4)
    for name in ('net_g_4.pth', 'net_p_4.pth', 'net_d_4.pth'):
        assert (tmp_path / 'models' / name).is_file()
    assert set(torch.load(tmp_path / 'models' / 'net_g_4.pth')) == {'params', 'params_ema'}

    resumed_opt = copy.deepcopy(opt)
    resumed_opt['network_g'].pop('init_dynamic')  # the checkpoint alone must initialise
    resumed_opt['path']['resume_state'] = str(tmp_path / 'training_states' / '4.state')
    state = load_resume_state(resumed_opt)
    assert resumed_opt['path']['pretrain_network_p'].endswith('net_p_4.pth')
    assert resumed_opt['path']['pretrain_network_d'].endswith('net_d_4.pth')
    resumed = DASRModel(resumed_opt)
    resumed.resume_training(state)
    for name in ('net_g', 'net_g_ema', 'net_p', 'net_d'):
        ours, theirs = getattr(resumed, name).state_dict(), getattr(model, name).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), name
    for k, v in model.pair_pool.pool.items():
        assert torch.equal(resumed.pair_pool.pool[k], v)
    assert torch.equal(resumed.degradation_generator.get_state(), model.degradation_generator.get_state())
    # both continue identically
    for m in (model, resumed):
        torch.manual_seed(5)
        m.feed_data(gt_batch(5))
        m.optimize_parameters(5)
    assert torch.equal(model.degradation_params, resumed.degradation_params)
    assert all(torch.equal(v, resumed.net_p.state_dict()[k]) for k, v in model.net_p.state_dict().items())


def test_test_uses_net_p_in_eval_and_the_ema_generator(tmp_path, fake_degradation):
    model = DASRModel(tiny_opt(tmp_path))
    model.feed_data(gt_batch(1))
    model.optimize_parameters(1)
    lq = torch.rand(1, 3, 9, 11)
    model.is_train = False  # as validation does: the paired branch, here with the LQ alone
    model.feed_data({'lq': lq})
    model.test()
    with torch.no_grad():
        expected = model.net_g_ema(lq, model.net_p.eval()(lq)[1])
    assert model.output.shape == (1, 3, 36, 44)
    torch.testing.assert_close(model.output, expected, rtol=0, atol=0)
    assert model.net_p.training is False  # restored as found (it was put in eval above)
    with torch.no_grad():
        assert not torch.allclose(model.output, model.net_g.eval()(lq, model.net_p(lq)[1]))  # not net_g


def test_tiled_test_uses_the_whole_image_weights(tmp_path, fake_degradation):
    model = DASRModel(tiny_opt(tmp_path))
    model.is_train = False
    lq = torch.rand(1, 3, 40, 36)
    model.feed_data({'lq': lq})
    model.test()
    untiled = model.output
    model.opt['val'] = dict(model.opt.get('val') or {}, tile={'tile_size': 16, 'tile_pad': 12})
    model.feed_data({'lq': lq})
    model.test()
    torch.testing.assert_close(model.output, untiled, rtol=0, atol=1e-5)


def test_srgan_dynamic_model_test_file_path(tmp_path):
    # a test-time model from saved checkpoints: net_g (no EMA built) and net_p
    torch.manual_seed(0)
    net_g = MSRResNetDynamic(**{k: v for k, v in TINY_G.items() if k != 'type'}, init_dynamic=True)
    from realsr.archs.dasr_arch import Degradation_Predictor
    net_p = Degradation_Predictor(nf=8, num_params=NUM_PARAMS)
    torch.save({'params': net_g.state_dict()}, tmp_path / 'g.pth')
    torch.save({'params': net_p.state_dict()}, tmp_path / 'p.pth')
    opt = {'name': 't', 'model_type': 'SRGANDynamicModel', 'scale': 4, 'num_gpu': 0, 'is_train': False,
           'network_g': dict(TINY_G), 'network_p': {'type': 'Degradation_Predictor', 'nf': 8, 'num_params': NUM_PARAMS},
           'path': {'pretrain_network_g': str(tmp_path / 'g.pth'), 'pretrain_network_p': str(tmp_path / 'p.pth'),
                    'strict_load_g': True}}
    model = SRGANDynamicModel(opt)
    lq = torch.rand(2, 3, 7, 6)
    model.feed_data({'lq': lq})
    model.test()
    with torch.no_grad():
        torch.testing.assert_close(model.output, net_g.eval()(lq, net_p.eval()(lq)[1]), rtol=0, atol=0)
    assert model.net_g_ema is None and not hasattr(model, 'net_d')


def test_paired_training_without_params_names_regress_opt(tmp_path):
    opt = tiny_opt(tmp_path, model_type='SRGANDynamicModel')
    model = SRGANDynamicModel(opt)
    model.feed_data({'lq': torch.rand(2, 3, 8, 8), 'gt': torch.rand(2, 3, 32, 32)})
    with pytest.raises(ValueError, match='regress_opt'):
        model.optimize_parameters(1)
    model.feed_data({'lq': torch.rand(2, 3, 8, 8), 'gt': torch.rand(2, 3, 32, 32),
                     'degradation_params': torch.rand(2, NUM_PARAMS)})
    model.optimize_parameters(1)
    assert 'l_regression' in model.log_dict


# -- the real degradation spaces through the model -----------------------------------------------
def test_dasr_model_with_the_degradation_spaces(tmp_path):
    from realsr.degradations.dasr_spaces import DEGRADATION_SPACES
    opt = tiny_opt(tmp_path, queue_size=4)
    model = DASRModel(opt)
    spaces = set()
    for it in range(1, 7):
        model.feed_data(gt_batch(it, size=80))  # the 21x21 kernels need 74 px or more
        spaces.add(model.degradation_space)
        assert model.lq.shape == (2, 3, 8, 8) and model.gt.shape == (2, 3, 32, 32)
        assert model.degradation_params.shape == (2, NUM_PARAMS) and model.degradation_params.dtype == torch.float32
        assert torch.equal(model.lq, (model.lq * 255).round() / 255)  # quantised LQ
    assert spaces <= set(DEGRADATION_SPACES) and len(spaces) >= 2
    model.optimize_parameters(7)
    assert {'l_pix', 'l_regression', 'l_g_artifacts', 'l_g_gan'} <= set(model.log_dict)


# -- option files, shrunk, on CPU ------------------------------------------------------------------
SHRINK_G = dict(num_feat=8, num_block=2)
SHRINK_P = dict(nf=8)
SHRINK_D = dict(num_feat=4)


def _yaml(path):
    import yaml
    return yaml.safe_load(open(path, encoding='utf-8').read())


def _write_yaml(path, opt):
    import yaml
    path.write_text(yaml.safe_dump(opt))
    return str(path)


@pytest.fixture(scope='module')
def dasr_data(tmp_path_factory):
    from conftest import write_pair_folders
    from realsr.data.lmdb_util import make_lmdb_from_folder
    root = tmp_path_factory.mktemp('dasr_data')
    folders = write_pair_folders(root, n_train=4, n_val=1, hr_size=48)
    folders['train_lmdb'] = str(root / 'train_gt.lmdb')
    make_lmdb_from_folder(folders['train_gt'], folders['train_lmdb'], progress=False)
    # starting points in the shrunk sizes: an ordinary MSRResNet and a predictor
    torch.manual_seed(0)
    folders['msrresnet'] = str(root / 'msrresnet_f8b2.pth')
    torch.save({'params': MSRResNet(num_feat=8, num_block=2, upscale=4).state_dict()}, folders['msrresnet'])
    from realsr.archs.dasr_arch import Degradation_Predictor
    folders['predictor'] = str(root / 'predictor_nf8.pth')
    torch.save({'params': Degradation_Predictor(nf=8, num_params=NUM_PARAMS).state_dict()}, folders['predictor'])
    return folders


def _shrink_for_cpu(opt, name, total_iter=2):
    """Sizes only: tiny networks, 32-pixel crops from 80-pixel pads, batch 2, a 4-pair pool, CPU."""
    opt.update(name=name, num_gpu=0, gt_size=32, queue_size=4)
    opt['datasets']['train'].update(gt_size=32, crop_pad_size=80, batch_size_per_gpu=2, num_worker_per_gpu=0)
    opt['network_g'].update(SHRINK_G)
    opt['network_p'].update(SHRINK_P)
    opt['network_d'].update(SHRINK_D)
    opt['train']['total_iter'] = total_iter
    opt.setdefault('dist_params', {})['backend'] = 'gloo'  # the seed file says nccl, which needs CUDA
    opt['val']['val_freq'] = total_iter
    opt['logger'].update(print_freq=1, save_checkpoint_freq=total_iter, use_tb_logger=False)
    return opt


@pytest.mark.slow
def test_cddnet_seed_files_train_and_test_on_cpu(tmp_path, seed_options_dir, dasr_data, random_vgg19, monkeypatch):
    from realsr import test as test_entry
    from realsr import train
    opt = _yaml(seed_options_dir / 'cddnet' / 'train_DASR.yml')
    assert opt['model_type'] == 'DASRModel' and opt['network_g']['num_block'] == 50
    _shrink_for_cpu(opt, 'cddnet_seed')
    # paths only: the lmdb GT (the file's backend), the val LQ, an MSRResNet and a predictor to start from
    opt['datasets']['train'].update(dataroot_gt=dasr_data['train_lmdb'], meta_info=None)  # the lmdb lists its keys
    opt['datasets']['val']['dataroot_lq'] = dasr_data['val_lq']
    opt['path'].update(pretrain_network_g=dasr_data['msrresnet'], pretrain_network_p=dasr_data['predictor'])
    monkeypatch.chdir(tmp_path)
    model = train.main(['-opt', _write_yaml(tmp_path / 'train.yml', opt)])
    assert type(model) is DASRModel and model.net_g.num_block == 2
    # CDDNet's file lists no regularizer: its arch carries the cross dropout, as CDDNet's does
    (cross, ) = model.regularizers
    assert (type(cross).__name__, cross.p_col, cross.p_row) == ('CrossDropout', 0.2, 0.01)
    assert model.pair_pool.pool['lq'].shape == (4, 3, 8, 8) and model.pair_pool.pool['params'].shape == (4, 33)
    assert {'l_pix', 'l_regression', 'l_percep', 'l_g_artifacts', 'l_g_gan', 'l_d_real', 'l_d_fake'
            } <= set(model.log_dict)
    exp = tmp_path / 'experiments' / 'cddnet_seed'
    for name in ('net_g_2.pth', 'net_p_2.pth', 'net_d_2.pth', 'net_g_latest.pth', 'net_p_latest.pth'):
        assert (exp / 'models' / name).is_file(), name
    assert list((exp / 'visualization').rglob('*_2.png'))  # the validation ran and saved its output

    test_opt = _yaml(seed_options_dir / 'cddnet' / 'test_DASR.yml')
    assert test_opt['model_type'] == 'SRGANDynamicModel' and test_opt['path']['strict_load_g'] is True
    test_opt.update(name='cddnet_seed_test', num_gpu=0)
    for dataset in test_opt['datasets'].values():
        dataset['dataroot_lq'] = dasr_data['val_lq']
    test_opt['network_g'].update(SHRINK_G)
    test_opt['network_p'].update(SHRINK_P)
    test_opt['path'].update(pretrain_network_g=str(exp / 'models' / 'net_g_latest.pth'),
                            pretrain_network_p=str(exp / 'models' / 'net_p_latest.pth'))
    results = test_entry.main(['-opt', _write_yaml(tmp_path / 'test.yml', test_opt)])
    assert len(results) == len(test_opt['datasets'])
    saved = list((tmp_path / 'results' / 'cddnet_seed_test' / 'visualization').rglob('*.png'))
    assert len(saved) == len(test_opt['datasets'])


def test_cddnet_train_file_50_blocks_from_a_16_block_msrresnet_is_refused(tmp_path, seed_options_dir, dasr_data):
    # the seed train file as it is (num_block 50) with a 2-block MSRResNet in place of the 16-block one
    opt = _yaml(seed_options_dir / 'cddnet' / 'train_DASR.yml')
    opt['network_g'].update(num_feat=8)
    opt['network_p'].update(SHRINK_P)
    opt['network_d'].update(SHRINK_D)
    opt['train'].pop('perceptual_opt')  # not what this test is about (and VGG weights are offline)
    opt.update(is_train=True, num_gpu=0)
    opt['path'].update(pretrain_network_g=dasr_data['msrresnet'], pretrain_network_p=None)
    with pytest.raises(ValueError, match='2 residual blocks.*num_block is 50'):
        SRGANDynamicModel(opt)


@pytest.mark.slow
@pytest.mark.parametrize('name', ['train_CDDNet_x4.yml', 'train_DASR_x4.yml'])
def test_our_option_files_run_shrunk_with_validation(name, tmp_path, dasr_data, random_vgg19, monkeypatch):
    from conftest import REPO_ROOT
    from realsr import train
    opt = _yaml(REPO_ROOT / 'options' / 'train' / name)
    _shrink_for_cpu(opt, 'ours')
    backend = opt['datasets']['train']['io_backend']['type']
    opt['datasets']['train']['dataroot_gt'] = dasr_data['train_lmdb' if backend == 'lmdb' else 'train_gt']
    opt['datasets']['train']['meta_info'] = None
    opt['datasets']['val']['dataroot_lq'] = dasr_data['val_lq']
    opt['path']['pretrain_network_g'] = dasr_data['msrresnet']
    monkeypatch.chdir(tmp_path)
    model = train.main(['-opt', _write_yaml(tmp_path / 'o.yml', opt)])
    cddnet = 'CDDNet' in name
    assert model.net_g.with_rc is cddnet
    assert [type(r).__name__ for r in model.regularizers] == (['CrossDropout'] if cddnet else [])
    assert ('l_g_artifacts' in model.log_dict) is cddnet
    assert {'l_pix', 'l_regression', 'l_percep', 'l_g_gan'} <= set(model.log_dict)
    exp = tmp_path / 'experiments' / 'ours'
    assert (exp / 'models' / 'net_p_2.pth').is_file() and (exp / 'training_states' / '2.state').is_file()
    assert list((exp / 'visualization').rglob('*_2.png'))


def test_our_test_file_parses_for_the_dynamic_model():
    from conftest import REPO_ROOT
    opt = _yaml(REPO_ROOT / 'options' / 'test' / 'test_CDDNet_x4.yml')
    assert opt['model_type'] == 'SRGANDynamicModel' and opt['network_g']['num_block'] == 16
    assert all(d['type'] == 'SingleImageDataset' for d in opt['datasets'].values())


@pytest.mark.slow
def test_cddnet_resume_is_exact_for_every_network(tmp_path, seed_options_dir, dasr_data):
    """Killed after iteration 4 and resumed with --auto_resume: net_g (and EMA), net_p and net_d
    end bit-identical to an uninterrupted run (generator, pool and params in the state)."""
    import os
    import signal
    import subprocess
    import sys

    from conftest import REPO_ROOT, fake_vgg19_weights
    vgg = fake_vgg19_weights(tmp_path / 'vgg19.pth')

    def run(exp, *extra, env=None):
        opt = _shrink_for_cpu(_yaml(seed_options_dir / 'cddnet' / 'train_DASR.yml'), exp, total_iter=6)
        opt['datasets']['train'].update(dataroot_gt=dasr_data['train_lmdb'], meta_info=None)
        opt['datasets']['val']['dataroot_lq'] = dasr_data['val_lq']
        opt['logger']['save_checkpoint_freq'] = 2
        opt['path'].update(pretrain_network_g=dasr_data['msrresnet'], pretrain_network_p=dasr_data['predictor'])
        path = _write_yaml(tmp_path / f'{exp}.yml', opt)
        return subprocess.run([sys.executable, str(REPO_ROOT / 'realsr' / 'train.py'), '-opt', path, *extra],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env=dict(os.environ, OMP_NUM_THREADS='1', REALSR_VGG_WEIGHTS=vgg, **(env or {})))

    full = run('full')
    assert full.returncode == 0, full.stderr[-2000:]
    assert run('cut', env={'REALSR_TEST_KILL_AFTER_ITER': '4'}).returncode == -signal.SIGKILL
    state = torch.load(tmp_path / 'experiments' / 'cut' / 'training_states' / '4.state', weights_only=True)
    assert state['pair_pool']['ptr'] == 4 and set(state['pair_pool']['pool']) == {'lq', 'gt', 'params'}
    resumed = run('cut', '--auto_resume')
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for net in ('net_g', 'net_p', 'net_d'):
        a = torch.load(tmp_path / 'experiments' / 'full' / 'models' / f'{net}_6.pth', weights_only=True)
        b = torch.load(tmp_path / 'experiments' / 'cut' / 'models' / f'{net}_6.pth', weights_only=True)
        assert set(a) == set(b)
        for key in a:
            for name in a[key]:
                assert torch.equal(a[key][name], b[key][name]), f'{net} {key}/{name}'


@pytest.mark.slow
def test_cddnet_ddp_two_processes_gloo(tmp_path, seed_options_dir, dasr_data):
    """CDDNet's train file under torch.distributed (2 gloo processes): every rank degrades its own
    batches, gradients of net_g, net_p and net_d are averaged, so all three end identical."""
    import os
    import subprocess
    import sys

    from conftest import REPO_ROOT, fake_vgg19_weights
    opt = _shrink_for_cpu(_yaml(seed_options_dir / 'cddnet' / 'train_DASR.yml'), 'ddp_cddnet', total_iter=3)
    opt['datasets']['train'].update(dataroot_gt=dasr_data['train_lmdb'], meta_info=None)
    opt['datasets']['val']['dataroot_lq'] = dasr_data['val_lq']
    opt['path'].update(pretrain_network_g=dasr_data['msrresnet'], pretrain_network_p=dasr_data['predictor'])
    config = _write_yaml(tmp_path / 'o.yml', opt)
    dump = tmp_path / 'dump.py'
    dump.write_text(
        'import os, sys, torch\n'
        f'sys.path.insert(0, {str(REPO_ROOT)!r})\n'
        'from realsr.engine.trainer import train_pipeline\n'
        'from realsr.runtime.checkpoint import unwrap\n'
        'model = train_pipeline(os.getcwd(), sys.argv[1:])\n'
        'r = torch.distributed.get_rank()\n'
        'nets = {n: unwrap(getattr(model, n)).state_dict() for n in ("net_g", "net_p", "net_d")}\n'
        'torch.save({"nets": nets, "params": model.pair_pool.pool["params"]}, f"rank{r}.pth")\n')
    port = 31500 + os.getpid() % 1000
    env = dict(os.environ, OMP_NUM_THREADS='1', REALSR_VGG_WEIGHTS=fake_vgg19_weights(tmp_path / 'vgg19.pth'))
    proc = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={port}',
                           str(dump), '-opt', config, '--launcher', 'pytorch'], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f'rank{r}.pth', weights_only=True) for r in (0, 1))
    for net in ('net_g', 'net_p', 'net_d'):
        assert all(torch.equal(r0['nets'][net][k], r1['nets'][net][k]) for k in r0['nets'][net]), net
    assert not torch.equal(r0['params'], r1['params'])  # each rank's pool holds its own degradations
