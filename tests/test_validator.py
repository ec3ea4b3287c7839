"""The Validator (realsr/engine/validator.py): sharded validation equals single-process validation,
validation touches nothing of the model but ``infer``, keeps the RNG states, and its best-metric
record survives a save/load round trip."""
import copy
import csv
import random
import shutil

import numpy as np
import pytest
import torch

from conftest import write_pair_folders
from test_degradation_ops import OFFICIAL_CFG
from test_train_e2e import TEST_PY, run, write_yaml

from realsr.archs import build_network
from realsr.engine import validator as validator_module
from realsr.engine.validator import Validator, shard_indices

NET = {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 1, 'upscale': 4}
METRICS = {'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': True},
           'ssim': {'type': 'calculate_ssim', 'crop_border': 4}}


def _dataset_opt(name, folders):
    return {'name': name, 'type': 'PairedImageDataset', 'phase': 'val', 'scale': 4, 'io_backend': {'type': 'disk'},
            'dataroot_gt': folders['val_gt'], 'dataroot_lq': folders['val_lq']}


def _one_image_set(folders, root):
    """A set of a single image: under 2 ranks, rank 1's share of it is empty."""
    one = {'val_gt': str(root / 'one' / 'HR'), 'val_lq': str(root / 'one' / 'LR')}
    for key in one:
        (root / 'one' / ('HR' if key == 'val_gt' else 'LR')).mkdir(parents=True)
        shutil.copy(f"{folders[key]}/img03.png", one[key])
    return one


def _rows(path):
    with open(path, newline='') as f:
        return list(csv.reader(f))


def test_shards_are_disjoint_and_cover_every_index():
    for n in (0, 1, 5, 7):
        for world in (1, 2, 3):
            shares = [shard_indices(n, rank, world) for rank in range(world)]
            assert sorted(i for share in shares for i in share) == list(range(n))  # no index twice, none padded


@pytest.mark.slow
def test_two_ranks_write_the_same_tables_as_one(tmp_path):
    """realsr-test under torchrun with 2 gloo processes vs 1 process: 5 images (shares of 3 and 2) and
    a 1-image set (rank 1 has nothing). The CSV files must be identical: each image is computed by
    the same code on the same machine with OMP_NUM_THREADS=1 in both runs (``run`` sets it), so
    sharding changes only which process computes it, and averages are summed in dataset order."""
    folders = write_pair_folders(tmp_path / 'data', n_train=0, n_val=5, hr_size=32)
    one = _one_image_set(folders, tmp_path / 'data')
    net = build_network(NET)
    torch.manual_seed(3)
    for p in net.parameters():  # away from the identity-like init, so images differ from bicubic
        p.data.add_(torch.randn_like(p) * 0.05)
    torch.save({'params': net.state_dict()}, tmp_path / 'net.pth')

    def options(name):
        return {'name': name, 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 0, 'network_g': NET,
                'datasets': {'test_1': _dataset_opt('five', folders), 'test_2': _dataset_opt('one', one)},
                'path': {'pretrain_network_g': str(tmp_path / 'net.pth')},
                'val': {'save_img': True, 'compare_bicubic': True, 'metrics': METRICS}}

    single = run([TEST_PY, '-opt', write_yaml(tmp_path / 'single.yml', options('single'))], tmp_path, timeout=120)
    assert single.returncode == 0, single.stderr[-3000:]
    port = 29500 + (tmp_path.stat().st_ino % 1000)
    sharded = run(['-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={port}', TEST_PY, '-opt',
                   write_yaml(tmp_path / 'sharded.yml', options('sharded')), '--launcher', 'pytorch'], tmp_path,
                  timeout=120)
    assert sharded.returncode == 0, sharded.stderr[-3000:]

    results = tmp_path / 'results'
    for table in ('metrics_per_image.csv', 'metrics_average.csv'):
        assert _rows(results / 'sharded' / table) == _rows(results / 'single' / table), table
    per_image = _rows(results / 'single' / 'metrics_per_image.csv')
    assert [row[:2] for row in per_image[1:]] == [['five', f'img{i:02d}'] for i in range(5)] + [['one', 'img03']]
    averages = _rows(results / 'single' / 'metrics_average.csv')
    assert [row[:2] for row in averages[1:]] == [['five', '5'], ['five (bicubic)', '5'], ['one', '1'],
                                                 ['one (bicubic)', '1']]
    assert averages[1][2] != averages[2][2]  # the network's PSNR is not the bicubic one: the test can fail
    assert (results / 'sharded' / 'metrics.md').read_text() == (results / 'single' / 'metrics.md').read_text()
    for run_name in ('single', 'sharded'):  # every image saved once, by the rank that computed it
        saved = sorted(p.name for p in (results / run_name / 'visualization' / 'five').glob('*.png'))
        assert saved == [f'img{i:02d}_{run_name}.png' for i in range(5)]


# -- in one process: what validation may touch, RNG, best-metric state, ranks simulated ----------
class _Dataset(torch.utils.data.Dataset):
    """LQ/GT pairs with names; GT 4x the LQ size."""

    def __init__(self, n, name='toy', seed=0):
        g = torch.Generator().manual_seed(seed)
        self.items = [(torch.rand(3, 8, 8, generator=g), torch.rand(3, 32, 32, generator=g)) for _ in range(n)]
        self.opt = {'name': name}

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        lq, gt = self.items[i]
        return {'lq': lq, 'gt': gt, 'lq_path': f'/x/im{i}.png', 'gt_path': f'/y/im{i}.png'}


class _UpsampleModel:
    """A model with only ``infer``: a fixed bicubic upsampling plus a per-image offset."""

    def infer(self, lq):
        out = torch.nn.functional.interpolate(lq, scale_factor=4, mode='bicubic', align_corners=False)
        return (out + 0.02 * torch.rand(()).item()).clamp(0, 1)  # draws random numbers on purpose


class _Recorder:
    """Wraps a model and records every attribute validation reads or writes."""

    def __init__(self, model):
        object.__setattr__(self, '_model', model)
        object.__setattr__(self, 'touched', [])

    def __getattr__(self, name):
        self.touched.append(name)
        return getattr(self._model, name)

    def __setattr__(self, name, value):
        self.touched.append(f'set {name}')
        setattr(self._model, name, value)


def _opt(tmp_path, **val):
    return {'name': 'run', 'is_train': True, 'path': {'visualization': str(tmp_path / 'vis')},
            'val': {'pbar': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}, **val}}


@pytest.mark.parametrize('model_type', ['SRModel', 'RealESRNetModel'])
def test_validation_touches_only_infer_of_a_training_model(model_type, tmp_path):
    """A real model in training mode (RealESRNetModel: degrading GT on the fly, its feed_data would
    synthesise pairs): validation calls ``infer`` and nothing else, so ``is_train``, the fed tensors
    and the network's train mode are as they were."""
    from realsr.models import build_model
    opt = {'name': 'run', 'model_type': model_type, 'scale': 4, 'num_gpu': 0, 'device': 'cpu', 'is_train': True,
           'dist': False, 'network_g': NET, 'path': {'visualization': str(tmp_path / 'vis')},
           'gt_size': 32, 'queue_size': 2, 'datasets': {'train': {'batch_size_per_gpu': 1, **OFFICIAL_CFG}},
           'train': {'optim_g': {'type': 'Adam', 'lr': 1e-4}, 'pixel_opt': {'type': 'L1Loss'}, 'total_iter': 1},
           'val': {'pbar': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 0}}}}
    model = build_model(opt)
    assert model_type == 'SRModel' or model.degradation is not None  # the on-the-fly branch is live
    lq, gt, output = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    model.lq, model.gt, model.output = lq, gt, output
    recorder = _Recorder(model)
    result = Validator(opt).validate(recorder, _Dataset(3), current_iter=5, save_img=True)
    assert recorder.touched == ['infer'] * 3
    assert model.is_train and model.net_g.training
    assert model.lq is lq and model.gt is gt and model.output is output
    assert [r['name'] for r in result['images']] == ['im0', 'im1', 'im2']
    assert (tmp_path / 'vis' / 'im1' / 'im1_5.png').is_file()


def test_validate_all_keeps_every_rng_state(tmp_path):
    validator = Validator(_opt(tmp_path))
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    expected = (torch.rand(2), np.random.rand(2), random.random())
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    validator.validate_all(_UpsampleModel(), [_Dataset(2)], current_iter=1)
    after = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(after[0], expected[0]) and np.array_equal(after[1], expected[1]) and after[2] == expected[2]


def test_best_metric_record_round_trips_through_a_state_file(tmp_path):
    validator = Validator(_opt(tmp_path, metrics={'psnr': {'type': 'calculate_psnr', 'crop_border': 0},
                                                  'niqe_like': {'type': 'calculate_psnr', 'crop_border': 0,
                                                                'better': 'lower'}}))
    torch.manual_seed(0)
    first = validator.validate(_UpsampleModel(), _Dataset(2), current_iter=100)['average']['psnr']
    torch.manual_seed(5)
    second = validator.validate(_UpsampleModel(), _Dataset(2), current_iter=200)['average']['psnr']
    assert first != second
    record = validator.state_dict()
    assert record['toy']['psnr'] == {'better': 'higher', 'val': max(first, second),
                                     'iter': 100 if first > second else 200}
    assert record['toy']['niqe_like'] == {'better': 'lower', 'val': min(first, second),
                                          'iter': 100 if first < second else 200}
    torch.save({'best_metric_results': record}, tmp_path / 'x.state')
    restored = Validator(_opt(tmp_path))
    restored.load_state_dict(torch.load(tmp_path / 'x.state', weights_only=True)['best_metric_results'])
    assert restored.state_dict() == record
    record['toy']['psnr']['val'] = -1.0  # state_dict is a copy: changing it changes nothing inside
    assert restored.state_dict()['toy']['psnr']['val'] == max(first, second)
    restored.load_state_dict(None)  # a state without a record (older files) starts empty
    assert restored.state_dict() == {}


class _Fixed:
    """The same output for an image whichever rank runs it (no random offset)."""

    def infer(self, lq):
        return torch.nn.functional.interpolate(lq, scale_factor=4, mode='bicubic', align_corners=False).clamp(0, 1)


def test_simulated_ranks_give_the_single_process_result_in_dataset_order(tmp_path, monkeypatch):
    """Three ranks on 7 images (shares of 3, 2, 2), simulated in this process: every rank gets the
    records in dataset order and the same averages, bicubic baseline and best-metric record as one
    process (same process, same arithmetic: exact)."""
    dataset, opt, world = _Dataset(7), _opt(tmp_path, compare_bicubic=True), 3
    single = Validator(opt)
    expected = single.validate(_Fixed(), dataset, current_iter=3)
    shares = [Validator(opt)._validate_share(_Fixed(), dataset, 'toy', rank, world, 3, False, True)
              for rank in range(world)]
    assert [len(share) for share in shares] == [3, 2, 2]
    monkeypatch.setattr(validator_module, '_all_gather', lambda obj: [(share, None) for share in shares])
    for rank in range(world):
        monkeypatch.setattr(validator_module, 'get_dist_info', lambda r=rank: (r, world))
        validator = Validator(opt)
        assert validator.validate(_Fixed(), dataset, current_iter=3) == expected, rank
        assert validator.state_dict() == single.state_dict()
        assert validator.bicubic_baseline == single.bicubic_baseline


def test_an_error_on_another_rank_is_raised_on_every_rank(tmp_path, monkeypatch):
    monkeypatch.setattr(validator_module, 'get_dist_info', lambda: (0, 2))
    monkeypatch.setattr(validator_module, '_all_gather',
                        lambda obj: [obj, ([], 'rank 1: ValueError: cannot read im1.png')])
    with pytest.raises(RuntimeError, match=r'validation of toy failed on another rank \(rank 1: ValueError: cannot '
                                           r'read im1.png\)'):
        Validator(_opt(tmp_path)).validate(_UpsampleModel(), _Dataset(2), current_iter=1)


def test_an_error_here_is_shared_before_it_is_raised(tmp_path, monkeypatch):
    """The failing rank still joins the gather (the others would wait there until the timeout)."""
    gathered = []
    monkeypatch.setattr(validator_module, 'get_dist_info', lambda: (1, 2))
    monkeypatch.setattr(validator_module, '_all_gather', lambda obj: gathered.append(obj) or [([], None), obj])

    class Broken:
        def infer(self, lq):
            raise ValueError('out of cheese')

    with pytest.raises(ValueError, match='out of cheese'):
        Validator(_opt(tmp_path)).validate(Broken(), _Dataset(3), current_iter=1)
    assert gathered == [([], 'rank 1: ValueError: out of cheese')]


def test_scalar_sinks_get_the_averages_on_rank_zero(tmp_path):
    class Sink:
        def __init__(self):
            self.calls = []

        def add_scalar(self, *args):
            self.calls.append(args)

    sink = Sink()
    result = Validator(_opt(tmp_path), [None, sink]).validate(_UpsampleModel(), _Dataset(2), current_iter=7)
    assert sink.calls == [('metrics/toy/psnr', result['average']['psnr'], 7)]


def test_write_results_tables(tmp_path):
    from realsr.engine.tester import write_results  # the name other tools import
    results = [{'dataset': 'A', 'images': [{'name': 'x', 'psnr': 30.0}, {'name': 'y', 'psnr': 32.5}],
                'average': {'psnr': 31.25}, 'bicubic': {'psnr': 28.0}}]
    paths = write_results(copy.deepcopy(results), str(tmp_path))
    assert _rows(paths[0]) == [['dataset', 'image', 'psnr'], ['A', 'x', '30.0'], ['A', 'y', '32.5']]
    assert _rows(paths[1]) == [['dataset', 'images', 'psnr'], ['A', '2', '31.25'], ['A (bicubic)', '2', '28.0']]
    assert open(paths[2]).read() == ('| dataset | images | psnr |\n|---|---:|---:|\n| A | 2 | 31.2500 |\n'
                                     '| A (bicubic) | 2 | 28.0000 |\n\n### A\n\n| image | psnr |\n|---|---:|\n'
                                     '| x | 30.0000 |\n| y | 32.5000 |\n')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['metrics.md', 'metrics_average.csv',
                                                          'metrics_per_image.csv']  # no temp file left
