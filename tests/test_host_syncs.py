"""Device-to-host transfers and torch op counts of one training batch's degradations.

On a GPU every read of a device value on the host (``.item()``, ``.tolist()``, ``.cpu()``,
``int(t)``, ``if t:`` ...) waits for the launch queue to drain. The degradation pipelines may do
at most ONE such transfer per training batch: their per-batch choices are drawn together and
fetched with one ``.tolist()``. These tests run on the CPU, where a transfer is free, and count the
conversions that would be transfers on a GPU by patching the ``torch.Tensor`` methods that perform
them (``.cpu()`` of a CPU tensor included). They also make sure that no op with a data-dependent
output size (``bincount``, ``nonzero``, ``unique``, ...) runs: those read a value back internally.

``python tests/test_host_syncs.py`` prints the counts of each pipeline (transfers, with where they
come from, and aten ops), the numbers in ``docs/benchmarks.md``.
"""
import contextlib
import functools
import sys
import traceback
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils._python_dispatch import TorchDispatchMode

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(REPO))

from realsr.degradations.dasr_spaces import DEGRADATION_SPACES, DASRDegradation  # noqa: E402
from realsr.degradations.pair_pool import TrainingPairPool  # noqa: E402
from realsr.degradations.pipeline import SecondOrderDegradation, paired_random_crop_batch  # noqa: E402
from realsr.degradations.usm import USMSharp  # noqa: E402

# The Tensor methods that copy device data to the host (or would, on a GPU).
CONVERSIONS = ('item', 'tolist', 'cpu', 'numpy', '__bool__', '__int__', '__float__', '__index__')
# aten ops whose output size depends on the data, or that read a value back internally.
DATA_DEPENDENT_OPS = ('bincount', 'nonzero', 'unique', 'masked_select', 'repeat_interleave', '_local_scalar_dense',
                      'histc', 'equal', 'is_nonzero', 'allclose', 'argwhere', '_assert_async')

GT_SIZE, PATCH, BATCH = 128, 64, 4  # small crops keep the test quick; the counts do not depend on sizes
SEEDS = range(6)  # on 2026-12-06 these covered both noise types at both stages, both final orders, the
# three resize modes, batches with and without gray samples, and every DASR space when drawn


def _realsr_frame():
    """``file:line`` of the innermost realsr frame of the current stack (where a transfer is made)."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if '/realsr/' in frame.filename.replace('\\', '/'):
            return f'{Path(frame.filename).name}:{frame.lineno}'
    return 'outside realsr'


@contextlib.contextmanager
def count_host_transfers():
    """Patch the conversion methods of ``torch.Tensor`` with wrappers that record each call (once,
    not again for the calls it makes itself), then call through. Yields the list of
    (method, location) records."""
    records, depth = [], [0]
    saved = {name: torch.Tensor.__dict__.get(name) for name in CONVERSIONS}

    def wrap(name, method):

        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            if depth[0] == 0:
                records.append((name, _realsr_frame()))
            depth[0] += 1
            try:
                return method(self, *args, **kwargs)
            finally:
                depth[0] -= 1

        return wrapper

    for name in CONVERSIONS:
        setattr(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))
    try:
        yield records
    finally:
        for name, method in saved.items():
            if method is None:
                delattr(torch.Tensor, name)  # it was inherited from torch._C.TensorBase
            else:
                setattr(torch.Tensor, name, method)


class CountOps(TorchDispatchMode):
    """Counts the aten ops that run (by overload packet name)."""

    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self):
        return sum(self.ops.values())

    @property
    def host_constants(self):
        """Tensors made from host data (``torch.tensor(...)``): a host-to-device copy each on a GPU."""
        return self.ops['lift_fresh']

    def data_dependent(self):
        return {name: n for name, n in self.ops.items() if name.lstrip('_').split('.')[0] in
                {op.lstrip('_') for op in DATA_DEPENDENT_OPS}}


# -- the pipelines, configured from the option files -------------------------------------------------
def _options(name):
    return yaml.safe_load((REPO / 'options' / 'train' / name).read_text())


def realesrgan_pipeline(per_sample=False):
    opt = _options('train_RealESRNet_x4plus.yml')
    opt['per_sample'] = per_sample
    return SecondOrderDegradation(opt, opt['datasets']['train'], opt['scale']), opt


def dasr_pipeline():
    opt = _options('train_CDDNet_x4.yml')
    return DASRDegradation(opt, opt['datasets']['train'], opt['scale']), opt


def _gt(seed):
    g = torch.Generator().manual_seed(1000 + seed)
    gt = torch.rand(BATCH, 3, GT_SIZE // 8, GT_SIZE // 8, generator=g)
    return torch.nn.functional.interpolate(gt, size=(GT_SIZE, GT_SIZE), mode='bicubic', align_corners=False).clamp(0, 1)


class TrainingBatch:
    """What the models do per training batch on the device: sharpen the GT, degrade it, crop one
    window, pass the pair through a (full) pool. ``space``: a DASR space, or None to draw one."""

    def __init__(self, kind, space=None, device='cpu'):
        if kind == 'dasr':
            self.deg, opt = dasr_pipeline()
        else:
            self.deg, opt = realesrgan_pipeline(per_sample=kind == 'per_sample')
        self.deg.to(device)
        self.kind, self.space, self.scale = kind, space, opt['scale']
        self.usm = USMSharp().to(device)
        self.pool = TrainingPairPool(BATCH, BATCH)  # full after one batch

    def __call__(self, gt, generator):
        gt = self.usm(gt)
        if self.kind == 'dasr':
            lq, params = self.deg(gt, generator, space=self.space)
            aligned = {'params': params}
        else:
            lq, aligned = self.deg(gt, generator), {}
        (gt, ), lq = paired_random_crop_batch([gt], lq, PATCH, self.scale, generator)
        return self.pool({'lq': lq, 'gt': gt, **aligned}, generator)


CASES = {
    'realesrgan': ('default', None),
    'per_sample': ('per_sample', None),
    **{f'dasr_{name.split("_")[0]}': ('dasr', name) for name in DEGRADATION_SPACES},
    'dasr_drawn_space': ('dasr', None),
}


def measure(case, seeds=SEEDS):
    """[(transfers, op counter)] of one training batch of ``case`` per seed, each after a warm-up
    batch (which fills the pool and the per-device caches)."""
    batch = TrainingBatch(*CASES[case])
    results = []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        batch(_gt(seed), g)
        counter = CountOps()
        with count_host_transfers() as records, counter:
            batch(_gt(seed + 1), g)
        results.append((records, counter))
    return results


@pytest.mark.parametrize('case', list(CASES))
def test_at_most_one_host_transfer_per_training_batch(case):
    for seed, (records, counter) in zip(SEEDS, measure(case)):
        assert len(records) <= 1, f'{case}, seed {seed}: {len(records)} host transfers: {records}'
        assert not counter.data_dependent(), f'{case}, seed {seed}: data-dependent ops {counter.data_dependent()}'
        assert counter.host_constants == 0, f'{case}, seed {seed}: {counter.host_constants} tensors from host data'


def test_kernel_synthesis_is_a_few_batched_ops():
    """The three kernels of a batch: one draw and one build, a fixed number of ops (not one set
    per kernel type, per kernel or per sample; there were 562)."""
    deg, _ = realesrgan_pipeline()
    deg.kernels.sample(2, torch.Generator().manual_seed(0))  # the per-device constants
    totals = []
    for batch in (1, 4, 64):
        counter = CountOps()
        with count_host_transfers() as records, counter:
            deg.kernels.sample(batch, torch.Generator().manual_seed(batch))
        assert not records and not counter.data_dependent() and counter.host_constants == 0
        assert counter.ops['rand'] == 1 and sum(counter.ops.values()) < 200, counter.ops
        totals.append(counter.total)
    assert len(set(totals)) == 1, totals


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('case', list(CASES))
def test_cuda_sync_debug_mode_reports_at_most_one_sync(case):
    """On a GPU, CUDA's own sync detection (every blocking copy or wait, host-to-device copies of
    host data included) agrees: at most one per training batch."""
    batch = TrainingBatch(*CASES[case], device='cuda')
    for seed in SEEDS[:3]:
        g = torch.Generator(device='cuda').manual_seed(seed)
        batch(_gt(seed).cuda(), g)  # warm-up: caches and the pool
        gt = _gt(seed + 1).cuda()
        torch.cuda.synchronize()
        previous = torch.cuda.get_sync_debug_mode()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            torch.cuda.set_sync_debug_mode('warn')
            try:
                batch(gt, g)
            finally:
                torch.cuda.set_sync_debug_mode(previous)
        syncs = [str(w.message) for w in caught if 'synchroniz' in str(w.message)]
        assert len(syncs) <= 1, f'{case}, seed {seed}: {len(syncs)} syncs: {syncs}'


def test_the_counter_sees_every_conversion():
    t = torch.arange(3.0)
    with count_host_transfers() as records:
        t[0].item(), t.tolist(), t.cpu(), t.numpy(), bool(t[1]), int(t[1]), float(t[1]), [0, 1][t[1].long()]
    assert [name for name, _ in records] == list(CONVERSIONS)  # each once, in the order of the calls
    assert torch.Tensor.__dict__.get('__bool__') is None  # restored
    counter = CountOps()
    with counter:
        torch.bincount(torch.tensor([0, 2]))
    assert counter.data_dependent() == {'bincount': 1}


def main():
    """Print the counts of each case (the table in docs/benchmarks.md)."""
    torch.set_num_threads(2)
    print(f'{"case":<18} {"D2H transfers":<14} {"host constants":<15} {"aten ops":<10} where / data-dependent ops')
    for case in CASES:
        results = measure(case)
        transfers = [len(records) for records, _ in results]
        ops = [counter.total for _, counter in results]
        constants = [counter.host_constants for _, counter in results]
        where = Counter(loc for records, _ in results for _name, loc in records)
        dependent = Counter()
        for _, counter in results:
            dependent.update(counter.data_dependent())
        print(f'{case:<18} {f"{min(transfers)}-{max(transfers)}":<14} {f"{min(constants)}-{max(constants)}":<15} '
              f'{f"{min(ops)}-{max(ops)}":<10} {dict(where)} {dict(dependent) or ""}')
    deg, _ = realesrgan_pipeline()
    deg.kernels.sample(2, torch.Generator().manual_seed(0))
    counter = CountOps()
    with counter:
        deg.kernels.sample(BATCH, torch.Generator().manual_seed(1))
    print(f'kernel synthesis (three kernels, batch {BATCH}): {counter.total} aten ops, '
          f'{counter.host_constants} host constants')


if __name__ == '__main__':
    main()
