"""Our own RRDBNet recipes for Adaptive Dropout and Simple-Align (the papers ship SRResNet files only):
they keep the paper's SRResNet recipe except the arch (and, for Adaptive Dropout, its sites and
step), attach where their header says on the full-size net, and run end to end on CPU shrunk, with
and without their regularizer."""
import math

import pytest
import torch
import yaml

from conftest import REPO_ROOT
from realsr.archs.rrdbnet_arch import RRDBNet
from realsr.regularizers import build_regularizers
from realsr.regularizers.dropout import AdaptiveDropout
from realsr.regularizers.feature_alignment import FeatureAlignment
from test_dropout_regularizers import _shrink_for_cpu, _train, tiny_data  # noqa: F401 (fixture)

SHIPPED = REPO_ROOT / 'options' / 'train'
RRDB_NET = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 23, 'num_grow_ch': 32}
# (our RRDB recipe, the paper's SRResNet recipe it is derived from, its regularizer)
RECIPES = [('train_AdaptiveDropout_RRDBNet_x4.yml', 'train_AdaptiveDropout_SRResNet_x4.yml', AdaptiveDropout),
           ('train_SimpleAlign_RRDBNet_x4.yml', 'train_SimpleAlign_SRResNet_x4.yml', FeatureAlignment)]


def _load(name):
    return yaml.safe_load((SHIPPED / name).read_text())


@pytest.mark.parametrize('rrdb_name, srresnet_name, reg_cls', RECIPES)
def test_rrdb_recipe_is_the_srresnet_recipe_with_real_esrgan_rrdb(rrdb_name, srresnet_name, reg_cls):
    rrdb, srresnet = _load(rrdb_name), _load(srresnet_name)
    assert rrdb['network_g'] == RRDB_NET  # Real-ESRGAN's RRDBNet (train_RealESRNet_x4plus.yml)
    assert rrdb['name'] == srresnet['name'].replace('SRResNet', 'RRDBNet')
    (reg, ), (paper_reg, ) = rrdb['regularizers'], srresnet['regularizers']
    if reg_cls is AdaptiveDropout:  # the decided changes, see the file's header
        assert reg == dict(paper_reg, step=14000, n_layers=24, sites=['body.*.rdb1.conv1:output', 'conv_last:input'])
    else:
        assert reg == paper_reg
    for key in set(rrdb) | set(srresnet):  # everything else (data, schedule, batch, val) is the paper's
        if key not in ('name', 'network_g', 'regularizers'):
            assert rrdb.get(key) == srresnet.get(key), key


def test_adaptive_dropout_rrdb_sites_on_the_full_net():
    (opt, ) = _load('train_AdaptiveDropout_RRDBNet_x4.yml')['regularizers']
    (reg, ) = build_regularizers([opt], RRDBNet(**{k: v for k, v in RRDB_NET.items() if k != 'type'}))
    names = [name for _, name, _ in reg.attached]
    assert names == [f'body.{i}.rdb1.conv1' for i in range(23)] + ['conv_last']
    # the switch-off ends where the paper's does (340k of 500k), within one step
    assert reg.step * reg.num_sites == 336000 and reg.p_at(23, 335999) == 0.3 and reg.p_at(23, 336000) == 1.0


@pytest.mark.slow
@pytest.mark.parametrize('with_reg', [True, False], ids=['with', 'without'])
@pytest.mark.parametrize('rrdb_name, srresnet_name, reg_cls', RECIPES)
def test_rrdb_recipe_runs_on_cpu(rrdb_name, srresnet_name, reg_cls, with_reg, tmp_path,
                                 tiny_data, monkeypatch):  # noqa: F811
    recipe = _load(rrdb_name)
    opt = _shrink_for_cpu(recipe, tiny_data, 'rrdb_recipe')
    opt['queue_size'] = recipe['queue_size']  # Simple-Align: no queue, as its recipe
    if with_reg and reg_cls is AdaptiveDropout:
        opt['regularizers'][0]['n_layers'] = 3  # the shrunk net: 2 RRDB blocks + conv_last
    if not with_reg:
        del opt['regularizers']
    model = _train(opt, tmp_path, monkeypatch)
    assert isinstance(model.net_g, RRDBNet)
    assert [type(r) for r in model.regularizers] == ([reg_cls] if with_reg else [])
    if with_reg and reg_cls is AdaptiveDropout:
        assert [n for _, n, _ in model.regularizers[0].attached] == ['body.0.rdb1.conv1', 'body.1.rdb1.conv1',
                                                                     'conv_last']
    two_views = with_reg and reg_cls is FeatureAlignment
    assert model.num_views == (2 if two_views else 1)
    assert ('l_align' in model.log_dict) == two_views and math.isfinite(model.log_dict['l_pix'])
    ckpt = torch.load(tmp_path / 'experiments' / 'rrdb_recipe' / 'models' / 'net_g_3.pth', weights_only=True)
    assert 'body.1.rdb3.conv5.weight' in ckpt['params']  # checkpoint keys are the plain arch's
