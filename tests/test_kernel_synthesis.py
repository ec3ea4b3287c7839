"""Batched kernel synthesis (realsr.degradations.kernel_synthesis) against the reference kernels.

1. deterministic parity with the oracle kernels (BasicSR's functions with fixed arguments);
2. parity with the numpy reference functions for random parameter batches;
3. statistical parity of :class:`KernelSynthesizer` with Real-ESRGAN's per-sample draws: the drawn
   parameters against their exact distributions, and the kernels against the numpy reference
   sampler's kernels (two-sample KS tests), plus a check that these tests reject plausible bugs;
4. reproducibility and invariants; 5. option errors; 6. no per-sample Python loop.

Every random source is seeded, so the statistical tests are deterministic; their thresholds are
p < 1e-4 (a correct sampler fails a given check with probability 1e-4 for an unlucky seed).
"""
import json
import math

import numpy as np
import pytest
import torch
from scipy import special, stats

from realsr.degradations import kernels as refk
from realsr.degradations.kernel_synthesis import (ANISO, GENERALIZED_ANISO, GENERALIZED_ISO, ISO, KERNEL_TYPES,
                                                  KIND_CODES, PLATEAU_ANISO, PLATEAU_ISO, PULSE, SINC,
                                                  KernelSynthesizer, bessel_j1, build_kernels)

ALPHA = 1e-4
OFFICIAL_LIST = ['iso', 'aniso', 'generalized_iso', 'generalized_aniso', 'plateau_iso', 'plateau_aniso']
OFFICIAL_PROB = [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]
SIZES = list(range(7, 22, 2))


def official_opt(**changes):
    """The kernel keys of Real-ESRGAN's train_realesr*_x4plus.yml (spec A.3)."""
    opt = dict(
        kernel_list=list(OFFICIAL_LIST), kernel_prob=list(OFFICIAL_PROB), sinc_prob=0.1, blur_sigma=[0.2, 3],
        betag_range=[0.5, 4], betap_range=[1, 2], kernel_list2=list(OFFICIAL_LIST),
        kernel_prob2=list(OFFICIAL_PROB), sinc_prob2=0.1, blur_sigma2=[0.2, 1.5], betag_range2=[0.5, 4],
        betap_range2=[1, 2], final_sinc_prob=0.8)
    opt.update(changes)
    return opt


def pad21(kernel, size=21):
    pad = (size - kernel.shape[0]) // 2
    return np.pad(kernel, ((pad, pad), (pad, pad)))


# -- 1. oracle parity ---------------------------------------------------------------------------
_KIND_OF_FUNCTION = {'bivariate_Gaussian': ISO, 'bivariate_generalized_Gaussian': GENERALIZED_ISO,
                     'bivariate_plateau': PLATEAU_ISO}


def _oracle_cases(oracle_dir):
    data = np.load(oracle_dir / 'kernels.npz')
    for i in range(int(data['num_cases'])):
        params = json.loads(str(data[f'case{i}_params']))
        yield i, params, data[f'case{i}_kernel']


def _build_case(params, out_size, dtype=torch.float64):
    fn = params['function'].rsplit('.', 1)[-1]
    kw = params['kwargs']
    if fn == 'circular_lowpass_kernel':
        return build_kernels(torch.tensor([SINC]), kw['kernel_size'], omega=kw['cutoff'], out_size=out_size,
                             dtype=dtype)[0].numpy()
    kind = _KIND_OF_FUNCTION[fn] + (0 if kw.get('isotropic', True) else 1)  # BasicSR's default is isotropic
    return build_kernels(torch.tensor([kind]), kw['kernel_size'], kw['sig_x'], kw['sig_y'], kw['theta'],
                         kw.get('beta'), out_size=out_size, dtype=dtype)[0].numpy()


def test_oracle_kernels(oracle_dir):
    cases = list(_oracle_cases(oracle_dir))
    assert len(cases) == 19
    for i, params, expected in cases:
        size = params['kwargs']['kernel_size']
        assert size <= 21
        # at the oracle's own shape (k x k, or 21 x 21 when it was padded) ...
        got = _build_case(params, expected.shape[0])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10, err_msg=f'oracle case {i}: {params}')
        # ... and padded to 21 like the Real-ESRGAN dataset does
        np.testing.assert_allclose(_build_case(params, 21), pad21(expected), rtol=0, atol=1e-10,
                                   err_msg=f'oracle case {i} padded to 21')
        got32 = _build_case(params, 21, dtype=torch.float32)
        assert got32.dtype == np.float32
        np.testing.assert_allclose(got32, pad21(expected), rtol=0, atol=1e-6, err_msg=f'oracle case {i} float32')


def test_oracle_cases_in_one_batch(oracle_dir):
    """All 19 oracle kernels built in a single batched call."""
    cases = list(_oracle_cases(oracle_dir))
    kind, size, sx, sy, th, be, om, expected = [], [], [], [], [], [], [], []
    for _, params, kernel in cases:
        fn, kw = params['function'].rsplit('.', 1)[-1], params['kwargs']
        if fn == 'circular_lowpass_kernel':
            kind.append(SINC)
        else:
            kind.append(_KIND_OF_FUNCTION[fn] + (0 if kw.get('isotropic', True) else 1))
        size.append(kw['kernel_size'])
        sx.append(kw.get('sig_x', math.nan))
        sy.append(kw.get('sig_y', math.nan))
        th.append(kw.get('theta', math.nan))
        be.append(kw.get('beta', math.nan))
        om.append(kw.get('cutoff', math.nan))
        expected.append(pad21(kernel))
    f64 = dict(dtype=torch.float64)  # float32 parameters would cost precision
    got = build_kernels(torch.tensor(kind), torch.tensor(size), torch.tensor(sx, **f64), torch.tensor(sy, **f64),
                        torch.tensor(th, **f64), torch.tensor(be, **f64), torch.tensor(om, **f64), dtype=torch.float64)
    np.testing.assert_allclose(got.numpy(), np.stack(expected), rtol=0, atol=1e-10)


def test_pulse_and_sinc_padding():
    pulse = build_kernels(torch.tensor([PULSE, PULSE]), torch.tensor([21, 1]), dtype=torch.float64).numpy()
    np.testing.assert_array_equal(pulse[0], refk.pulse_kernel(21))
    np.testing.assert_array_equal(pulse[1], refk.pulse_kernel(21))
    for size, omega in ((7, math.pi / 3), (13, 2.0), (21, math.pi / 5), (11, math.pi)):
        got = build_kernels(torch.tensor([SINC]), size, omega=omega, dtype=torch.float64)[0].numpy()
        np.testing.assert_allclose(got, refk.circular_lowpass_kernel(omega, size, pad_to=21), rtol=0, atol=1e-10)


def test_bessel_j1_accuracy():
    x = np.linspace(-60, 60, 240001)
    got = bessel_j1(torch.tensor(x, dtype=torch.float64)).numpy()
    assert np.abs(got - special.j1(x)).max() < 1e-13


# -- 2. parity with the numpy functions for random parameters --------------------------------------
def _reference_kernel(kind, size, sx, sy, th, beta, omega):
    name = KERNEL_TYPES[kind]
    if kind == SINC:
        return refk.circular_lowpass_kernel(omega, size, pad_to=21)
    if kind == PULSE:
        return refk.pulse_kernel(21).astype(np.float64)
    isotropic = not name.endswith('aniso')
    if name in ('iso', 'aniso'):
        k = refk.bivariate_Gaussian(size, sx, sy, th, isotropic=isotropic)
    elif name.startswith('generalized'):
        k = refk.bivariate_generalized_Gaussian(size, sx, sy, th, beta, isotropic=isotropic)
    else:
        k = refk.bivariate_plateau(size, sx, sy, th, beta, isotropic=isotropic)
    return pad21(k)


def test_random_parameter_batch_matches_numpy_functions():
    rng = np.random.default_rng(2024)
    n = 240
    kind = np.tile(np.arange(len(KERNEL_TYPES)), n // len(KERNEL_TYPES))
    size = rng.choice(SIZES, n)
    sx, sy = rng.uniform(0.2, 3.0, n), rng.uniform(0.2, 3.0, n)
    th = rng.uniform(-math.pi, math.pi, n)
    beta = np.where(rng.uniform(size=n) < 0.5, rng.uniform(0.5, 1, n), rng.uniform(1, 4, n))
    omega = rng.uniform(math.pi / 5, math.pi, n)
    got = build_kernels(torch.from_numpy(kind), torch.from_numpy(size), torch.from_numpy(sx), torch.from_numpy(sy),
                        torch.from_numpy(th), torch.from_numpy(beta), torch.from_numpy(omega),
                        dtype=torch.float64).numpy()
    expected = np.stack([_reference_kernel(*args) for args in zip(kind, size, sx, sy, th, beta, omega)])
    assert np.abs(got - expected).max() <= 1e-10
    got32 = build_kernels(torch.from_numpy(kind), torch.from_numpy(size), torch.from_numpy(sx), torch.from_numpy(sy),
                          torch.from_numpy(th), torch.from_numpy(beta), torch.from_numpy(omega)).numpy()
    assert got32.dtype == np.float32 and np.abs(got32 - expected).max() <= 1e-6


def test_isotropic_kinds_ignore_sig_y_and_theta():
    kinds = torch.tensor([ISO, GENERALIZED_ISO, PLATEAU_ISO])
    a = build_kernels(kinds, 15, 1.3, 0.4, 1.0, 1.7, dtype=torch.float64)
    b = build_kernels(kinds, 15, 1.3, float('nan'), float('nan'), 1.7, dtype=torch.float64)
    c = build_kernels(kinds, 15, 1.3, 1.3, 0.0, 1.7, dtype=torch.float64)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_larger_out_size():
    got = build_kernels(torch.tensor([ANISO, SINC]), torch.tensor([31, 25]), 4.0, 1.5, 0.6, omega=1.1, out_size=41,
                        dtype=torch.float64).numpy()
    np.testing.assert_allclose(got[0], pad21(refk.bivariate_Gaussian(31, 4.0, 1.5, 0.6, isotropic=False), 41),
                               rtol=0, atol=1e-10)
    np.testing.assert_allclose(got[1], refk.circular_lowpass_kernel(1.1, 25, pad_to=41), rtol=0, atol=1e-10)


# -- 3. statistical parity ------------------------------------------------------------------------
def _np(params):
    return {k: v.cpu().numpy() for k, v in params.items()}


def _check_uniform_mixture(values, components, what, failures):
    """``values`` against the mixture sum_i w_i U(lo_i, hi_i) (lo_i == hi_i: a point mass)."""
    values = np.asarray(values, dtype=np.float64)
    n = values.size
    if n < 50:
        failures.append(f'{what}: only {n} values')
        return
    weights = np.array([w for w, _, _ in components], dtype=np.float64)
    weights = weights / weights.sum()
    lows = np.array([lo for _, lo, _ in components], dtype=np.float64)
    highs = np.array([hi for _, _, hi in components], dtype=np.float64)
    if values.min() < lows.min() - 1e-12 or values.max() > highs.max() + 1e-12:
        failures.append(f'{what}: values in [{values.min():.4g}, {values.max():.4g}] outside '
                        f'[{lows.min():.4g}, {highs.max():.4g}]')
    mean = float(np.dot(weights, (lows + highs) / 2))
    second = float(np.dot(weights, (lows**2 + lows * highs + highs**2) / 3))
    std = math.sqrt(max(second - mean**2, 0.0))
    z = abs(values.mean() - mean) / (std / math.sqrt(n)) if std > 0 else abs(values.mean() - mean) * 1e12
    if z > stats.norm.isf(ALPHA / 2):
        failures.append(f'{what}: mean {values.mean():.5g}, expected {mean:.5g} (z = {z:.1f})')
    point = lows == highs
    if point.any():  # the fraction at each point mass, then the continuous part
        on_point = np.zeros(n, dtype=bool)
        for w, lo in zip(weights[point], lows[point]):
            hits = values == lo
            on_point |= hits
            p = stats.binomtest(int(hits.sum()), n, float(w)).pvalue
            if p < ALPHA:
                failures.append(f'{what}: {hits.mean():.4f} of the values equal {lo}, expected {w:.4f} (p={p:.2g})')
        values = values[~on_point]
        weights, lows, highs = weights[~point], lows[~point], highs[~point]
        weights = weights / weights.sum()

    def cdf(v):
        v = np.asarray(v, dtype=np.float64)[..., None]
        return (weights * np.clip((v - lows) / (highs - lows), 0, 1)).sum(-1)

    p = stats.kstest(values, cdf).pvalue
    if p < ALPHA:
        failures.append(f'{what}: KS test against the uniform mixture rejects (p={p:.2g})')


def _check_counts(observed_codes, categories, probs, what, failures):
    observed = np.array([(observed_codes == c).sum() for c in categories], dtype=np.float64)
    n = len(observed_codes)
    if observed.sum() != n:
        failures.append(f'{what}: {n - observed.sum():.0f} values outside the categories {categories}')
        return
    probs = np.asarray(probs, dtype=np.float64)
    expected = probs * n
    support = expected > 0
    if observed[~support].any():
        failures.append(f'{what}: draws in zero-probability categories {np.asarray(categories)[~support]}')
        return
    p = stats.chisquare(observed[support], expected[support]).pvalue
    if p < ALPHA:
        failures.append(f'{what}: frequencies {np.round(observed / n, 4).tolist()} vs {probs.round(4).tolist()} '
                        f'(chi-square p={p:.2g})')


def check_blur_params(params, opt, suffix, failures):
    """The drawn parameters of one blur stage against the exact distributions of the reference."""
    p = _np(params)
    what = f'kernel{1 if suffix == "" else 2}'
    kind, size = p['kind'], p['size']
    kernel_list, kernel_prob = opt['kernel_list' + suffix], opt['kernel_prob' + suffix]
    sinc_prob = opt['sinc_prob' + suffix]
    # kinds: sinc with sinc_prob, else kernel_list/kernel_prob
    probs = {code: 0.0 for code in range(len(KERNEL_TYPES))}
    for name, prob in zip(kernel_list, kernel_prob):
        probs[KIND_CODES[name]] += (1 - sinc_prob) * prob
    probs[SINC] += sinc_prob
    _check_counts(kind, list(probs), list(probs.values()), f'{what} kinds', failures)
    _check_counts(size, SIZES, [1 / len(SIZES)] * len(SIZES), f'{what} sizes', failures)
    # sinc: omega ~ U(pi/3, pi) for sizes below 13, U(pi/5, pi) from 13 on; checked size by size
    sinc = kind == SINC
    for s in SIZES:
        low = math.pi / 3 if s < 13 else math.pi / 5
        _check_uniform_mixture(p['omega'][sinc & (size == s)], [(1, low, math.pi)], f'{what} omega (size {s})',
                               failures)
    if np.isfinite(p['omega'][~sinc]).any():
        failures.append(f'{what}: non-sinc kernels carry an omega')
    # sigmas and rotation
    lo, hi = opt['blur_sigma' + suffix]
    param = ~sinc
    _check_uniform_mixture(p['sig_x'][param], [(1, lo, hi)], f'{what} sig_x', failures)
    iso = np.isin(kind, [ISO, GENERALIZED_ISO, PLATEAU_ISO])
    aniso = np.isin(kind, [ANISO, GENERALIZED_ANISO, PLATEAU_ANISO])
    if not (np.array_equal(p['sig_y'][iso], p['sig_x'][iso]) and (p['theta'][iso] == 0).all()):
        failures.append(f'{what}: isotropic kernels need sig_y == sig_x and theta == 0')
    _check_uniform_mixture(p['sig_y'][aniso], [(1, lo, hi)], f'{what} sig_y (aniso)', failures)
    _check_uniform_mixture(p['theta'][aniso], [(1, -math.pi, math.pi)], f'{what} theta (aniso)', failures)
    if aniso.sum() > 50:  # sig_x, sig_y and theta are independent draws
        for a, b in (('sig_x', 'sig_y'), ('sig_x', 'theta'), ('sig_y', 'theta')):
            p_corr = stats.pearsonr(p[a][aniso], p[b][aniso]).pvalue
            if p_corr < ALPHA:
                failures.append(f'{what}: {a} and {b} of anisotropic kernels are correlated (p={p_corr:.2g})')
    # beta: U(range[0], 1) or U(1, range[1]) with probability 1/2 each
    for kinds, key in (((GENERALIZED_ISO, GENERALIZED_ANISO), 'betag_range'),
                       ((PLATEAU_ISO, PLATEAU_ANISO), 'betap_range')):
        blo, bhi = opt[key + suffix]
        _check_uniform_mixture(p['beta'][np.isin(kind, kinds)], [(0.5, blo, 1), (0.5, 1, bhi)], f'{what} beta ({key})',
                               failures)
    if np.isfinite(p['beta'][np.isin(kind, [ISO, ANISO, SINC])]).any():
        failures.append(f'{what}: Gaussian or sinc kernels carry a beta')
    if np.isfinite(p['sig_x'][sinc]).any():
        failures.append(f'{what}: sinc kernels carry a sigma')


def check_final_params(params, opt, failures):
    p = _np(params)
    kind, size = p['kind'], p['size']
    _check_counts(kind, [SINC, PULSE], [opt['final_sinc_prob'], 1 - opt['final_sinc_prob']], 'sinc_kernel kinds',
                  failures)
    sinc = kind == SINC
    _check_counts(size[sinc], SIZES, [1 / len(SIZES)] * len(SIZES), 'sinc_kernel sizes', failures)
    if not (size[~sinc] == 1).all():
        failures.append('sinc_kernel: pulses must report size 1')
    # no size-dependent rule here: U(pi/3, pi) for the small and for the large sizes
    for group, mask in (('size < 13', size < 13), ('size >= 13', size >= 13)):
        _check_uniform_mixture(p['omega'][sinc & mask], [(1, math.pi / 3, math.pi)], f'sinc_kernel omega ({group})',
                               failures)


def check_all_params(params, opt):
    failures = []
    check_blur_params(params['kernel1'], opt, '', failures)
    check_blur_params(params['kernel2'], opt, '2', failures)
    check_final_params(params['sinc_kernel'], opt, failures)
    return failures


N_PARAMS = 50000


@pytest.fixture(scope='module')
def official_params():
    synth = KernelSynthesizer(official_opt())
    return synth.sample_params(N_PARAMS, torch.Generator().manual_seed(1234))


def test_drawn_parameters_follow_the_reference_distribution(official_params):
    failures = check_all_params(official_params, official_opt())
    assert not failures, '\n'.join(failures)


def test_plateau_beta_is_exactly_one_half_of_the_time(official_params):
    """spec A.1: with betap_range [1, 2] the lower branch is U(1, 1)."""
    p = _np(official_params['kernel1'])
    beta = p['beta'][np.isin(p['kind'], [PLATEAU_ISO, PLATEAU_ANISO])]
    assert 0.4 < (beta == 1.0).mean() < 0.6


def test_statistical_checks_reject_plausible_bugs(official_params):
    """The checks above must fail for typical sampler bugs (mutations of correct draws)."""
    opt = official_opt()
    gen = torch.Generator().manual_seed(99)

    def mutated(stage, **changes):
        params = {name: dict(p) for name, p in official_params.items()}
        params[stage].update(changes)
        return check_all_params(params, opt)

    k1 = official_params['kernel1']
    kind, size = k1['kind'], k1['size']
    aniso = (kind == ANISO) | (kind == GENERALIZED_ANISO) | (kind == PLATEAU_ANISO)
    gen_or_plat = torch.isfinite(k1['beta'])
    u = torch.rand(kind.shape, generator=gen, dtype=torch.float64)
    bugs = {
        # kernel_prob applied in the reverse order of kernel_list
        'kernel_prob order': check_all_params(
            KernelSynthesizer(official_opt(kernel_prob=OFFICIAL_PROB[::-1])).sample_params(
                N_PARAMS, torch.Generator().manual_seed(5)), opt),
        # sig_y not drawn for anisotropic kernels
        'sig_y = sig_x': mutated('kernel1', sig_y=torch.where(aniso, k1['sig_x'], k1['sig_y'])),
        # beta drawn from the whole range instead of the two branches
        'beta without branches': mutated(
            'kernel1', beta=torch.where(gen_or_plat & ((kind == GENERALIZED_ISO) | (kind == GENERALIZED_ANISO)),
                                        0.5 + 3.5 * u, k1['beta'])),
        # omega rule inverted (U(pi/5, pi) for the small kernels)
        'omega rule': mutated('kernel1', omega=torch.where(size < 13, math.pi / 5 + (k1['omega'] - math.pi / 3) *
                                                           (4 * math.pi / 5) / (2 * math.pi / 3), k1['omega'])),
        # the final sinc with the size-dependent omega rule
        'final omega rule': mutated(
            'sinc_kernel', omega=torch.where(official_params['sinc_kernel']['size'] >= 13, math.pi / 5 +
                                             (official_params['sinc_kernel']['omega'] - math.pi / 3) * 1.2,
                                             official_params['sinc_kernel']['omega'])),
        # theta in [0, pi) instead of [-pi, pi)
        'theta range': mutated('kernel1', theta=torch.where(aniso, k1['theta'].abs(), k1['theta'])),
    }
    undetected = [name for name, failures in bugs.items() if not failures]
    assert not undetected, f'statistical checks missed: {undetected}'


def _kernel_features(kernels):
    """Per-kernel scalars to compare distributions: centre tap, spread, anisotropy, cross moment."""
    k = np.asarray(kernels, dtype=np.float64)
    n = k.shape[-1]
    ax = np.arange(n) - (n - 1) / 2
    x, y = ax[None, None, :], ax[None, :, None]
    return dict(centre=k[:, n // 2, n // 2], spread=(k * (x * x + y * y)).sum((1, 2)),
                anisotropy=np.abs((k * (x * x - y * y)).sum((1, 2))), cross=np.abs((k * x * y).sum((1, 2))))


def _ks_compare(ours, theirs, what, failures):
    for name, a in _kernel_features(ours).items():
        b = _kernel_features(theirs)[name]
        p = stats.ks_2samp(a, b).pvalue
        if p < ALPHA:
            failures.append(f'{what} {name}: two-sample KS p={p:.2g} (ours mean {a.mean():.4g}, '
                            f'reference mean {b.mean():.4g})')


N_REF = 3000


@pytest.fixture(scope='module')
def reference_triples():
    rng = np.random.default_rng(7)
    triples = [refk.sample_reference_kernels(official_opt(), rng=rng) for _ in range(N_REF)]
    return [np.stack(t) for t in zip(*triples)]


@pytest.fixture(scope='module')
def synthesized():
    synth = KernelSynthesizer(official_opt())
    gen = torch.Generator().manual_seed(4321)
    chunks = [synth.sample(2000, gen, return_params=True) for _ in range(4)]
    kernels = {k: torch.cat([c[0][k] for c in chunks]).numpy() for k in ('kernel1', 'kernel2', 'sinc_kernel')}
    params = {k: {p: torch.cat([c[1][k][p] for c in chunks]) for p in chunks[0][1][k]} for k in kernels}
    return kernels, params


def test_kernels_match_reference_sampler_distribution(reference_triples, synthesized):
    kernels, _ = synthesized
    failures = []
    for name, theirs in zip(('kernel1', 'kernel2', 'sinc_kernel'), reference_triples):
        ours = kernels[name]
        assert ours.shape[1:] == theirs.shape[1:] == (21, 21) and ours.dtype == theirs.dtype == np.float32
        if name == 'sinc_kernel':
            pulse_ours, pulse_theirs = ours[:, 10, 10] == 1, theirs[:, 10, 10] == 1
            table = [[pulse_ours.sum(), (~pulse_ours).sum()], [pulse_theirs.sum(), (~pulse_theirs).sum()]]
            if stats.fisher_exact(table).pvalue < ALPHA:
                failures.append(f'pulse fraction {pulse_ours.mean():.3f} vs reference {pulse_theirs.mean():.3f}')
            ours, theirs = ours[~pulse_ours], theirs[~pulse_theirs]
        _ks_compare(ours, theirs, name, failures)
    assert not failures, '\n'.join(failures)


@pytest.mark.parametrize('kind_name', OFFICIAL_LIST)
def test_kernels_of_each_kind_match_reference(kind_name, synthesized):
    """Kernels of one kind (ours, selected by the drawn kind) vs random_mixed_kernels([kind])."""
    kernels, params = synthesized
    code = KIND_CODES[kind_name]
    rng = np.random.default_rng(11 + code)
    failures = []
    for name, suffix in (('kernel1', ''), ('kernel2', '2')):
        opt = official_opt()
        ours = kernels[name][params[name]['kind'].numpy() == code][:1500]
        theirs = np.stack([
            pad21(refk.random_mixed_kernels([kind_name], [1.0], int(rng.choice(SIZES)), opt['blur_sigma' + suffix],
                                            opt['blur_sigma' + suffix], [-math.pi, math.pi],
                                            opt['betag_range' + suffix], opt['betap_range' + suffix], rng=rng))
            for _ in range(400)
        ]).astype(np.float32)
        assert len(ours) > 150
        _ks_compare(ours, theirs, f'{name} {kind_name}', failures)
    assert not failures, '\n'.join(failures)


def test_sinc_kernels_match_reference_given_size():
    """Sinc kernels of one size: our omega rule vs the reference's, through the kernels."""
    synth = KernelSynthesizer(official_opt(sinc_prob=1.0, sinc_prob2=1.0, final_sinc_prob=1.0, kernel_range=[9, 9],
                                           kernel_range2=[13, 13], final_kernel_range=[15, 15]))
    kernels = synth.sample(1000, torch.Generator().manual_seed(3))
    rng = np.random.default_rng(3)
    failures = []
    for name, size, omega_low in (('kernel1', 9, math.pi / 3), ('kernel2', 13, math.pi / 5),
                                  ('sinc_kernel', 15, math.pi / 3)):
        theirs = np.stack([refk.circular_lowpass_kernel(rng.uniform(omega_low, math.pi), size, pad_to=21)
                           for _ in range(1000)]).astype(np.float32)
        _ks_compare(kernels[name].numpy(), theirs, name, failures)
    assert not failures, '\n'.join(failures)


# -- 4. reproducibility and invariants --------------------------------------------------------------
def test_same_seed_same_kernels_different_seed_different():
    synth = KernelSynthesizer(official_opt())
    a = synth.sample(64, torch.Generator().manual_seed(0))
    b = synth.sample(64, torch.Generator().manual_seed(0))
    c = synth.sample(64, torch.Generator().manual_seed(1))
    for name in ('kernel1', 'kernel2', 'sinc_kernel'):
        assert torch.equal(a[name], b[name])
        assert not torch.equal(a[name], c[name])
    # the default generator also works, on an explicit device
    torch.manual_seed(5)
    d = synth.sample(4, device='cpu')
    torch.manual_seed(5)
    assert torch.equal(d['kernel1'], synth.sample(4, device='cpu')['kernel1'])


def test_empty_batch():
    kernels = KernelSynthesizer(official_opt()).sample(0, torch.Generator().manual_seed(0))
    assert all(k.shape == (0, 21, 21) for k in kernels.values())


def test_sample_equals_sample_params_then_build():
    synth = KernelSynthesizer(official_opt())
    kernels, params = synth.sample(32, torch.Generator().manual_seed(8), return_params=True)
    again = synth.build(synth.sample_params(32, torch.Generator().manual_seed(8)))
    for name in kernels:
        assert torch.equal(kernels[name], again[name])
        torch.testing.assert_close(kernels[name], build_kernels(**params[name]), rtol=0, atol=0)


def test_kernel_invariants(synthesized):
    kernels, params = synthesized
    ax = np.abs(np.arange(21) - 10)
    for name, k in kernels.items():
        p = _np(params[name])
        assert k.shape == (8000, 21, 21) and k.dtype == np.float32
        np.testing.assert_allclose(k.sum((1, 2)), 1.0, atol=2e-6)
        sinc = p['kind'] == SINC
        assert (k[~sinc] >= 0).all()
        if sinc.any():
            assert (k[sinc] < 0).any()  # jinc side lobes
        half = (p['size'] - 1) // 2
        outside = (ax[None, :, None] > half[:, None, None]) | (ax[None, None, :] > half[:, None, None])
        assert (k[outside] == 0).all()
        # the window's border row is not identically zero for a sinc (its taps are generically nonzero)
        edge = k[sinc, 10 - half[sinc], 10]
        assert (edge != 0).all()
    pulse = kernels['sinc_kernel'][params['sinc_kernel']['kind'].numpy() == PULSE]
    assert len(pulse) and (pulse == refk.pulse_kernel(21)).all()


def test_out_size_follows_the_largest_range():
    assert KernelSynthesizer(official_opt()).out_size == 21
    assert KernelSynthesizer(official_opt(kernel_range=[3, 9])).out_size == 21
    synth = KernelSynthesizer(official_opt(final_kernel_range=[21, 31]))
    assert synth.out_size == 31
    kernels, params = synth.sample(200, torch.Generator().manual_seed(0), return_params=True)
    assert all(k.shape == (200, 31, 31) for k in kernels.values())
    sizes = params['sinc_kernel']['size'][params['sinc_kernel']['kind'] == SINC]
    assert sizes.min() >= 21 and sizes.max() <= 31 and (sizes % 2 == 1).all()
    assert params['kernel1']['size'].max() <= 21  # the first-order range stays [7, 21]


# -- 5. option errors -------------------------------------------------------------------------------
@pytest.mark.parametrize('changes, keys', [
    (dict(kernel_prob=[0.5, 0.5]), ['kernel_prob', 'kernel_list']),
    (dict(kernel_prob2=[0.45, 0.25, 0.12, 0.03, 0.2, -0.05]), ['kernel_prob2', '>= 0']),
    (dict(kernel_prob=[0.45, 0.25, 0.12, 0.03, 0.12, 0.04]), ['kernel_prob', 'sum to 1']),
    (dict(kernel_list=['iso', 'gaussian', 'aniso', 'plateau_iso', 'plateau_aniso', 'sinc']),
     ['kernel_list', "'gaussian'", "'sinc'", 'generalized_aniso']),
    (dict(blur_sigma=[3, 0.2]), ['blur_sigma', 'low < high']),
    (dict(blur_sigma2=[1.5, 1.5]), ['blur_sigma2', 'low < high']),
    (dict(blur_sigma=[0, 3]), ['blur_sigma', '> 0']),
    (dict(betag_range=[4, 0.5]), ['betag_range', 'low < high']),
    (dict(betap_range2=[2, 2]), ['betap_range2', 'low < high']),
    (dict(sinc_prob=1.5), ['sinc_prob', '[0, 1]']),
    (dict(final_sinc_prob=-0.1), ['final_sinc_prob']),
    (dict(kernel_range=[6, 21]), ['kernel_range', 'odd']),
    (dict(kernel_range2=[7, 20]), ['kernel_range2', 'odd']),
    (dict(final_kernel_range=[21, 7]), ['final_kernel_range', 'min <= max']),
    (dict(kernel_range=[-1, 7]), ['kernel_range']),
    (dict(kernel_range=[7]), ['kernel_range', 'pair']),
    (dict(kernel_list2=None), ['kernel_list2', 'missing']),
])
def test_invalid_options_name_the_key(changes, keys):
    with pytest.raises(ValueError) as err:
        KernelSynthesizer(official_opt(**changes))
    for key in keys:
        assert key in str(err.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ValueError) as err:
        KernelSynthesizer(official_opt(kernel_prob=[1.0], blur_sigma2=[2, 1], sinc_prob=2))
    assert all(k in str(err.value) for k in ('kernel_prob:', 'blur_sigma2:', 'sinc_prob:'))


def test_beta_ranges_are_only_needed_for_their_kinds():
    opt = official_opt(kernel_list=['iso', 'aniso'], kernel_prob=[0.5, 0.5])
    del opt['betag_range'], opt['betap_range']
    KernelSynthesizer(opt)
    opt = official_opt()
    del opt['betap_range2']
    with pytest.raises(ValueError, match='betap_range2'):
        KernelSynthesizer(opt)


def test_probabilities_within_tolerance_are_accepted():
    KernelSynthesizer(official_opt(kernel_prob=[0.45, 0.25, 0.12, 0.03, 0.12, 0.0300005]))


def test_build_kernels_errors():
    with pytest.raises(ValueError, match='odd'):
        build_kernels(torch.tensor([ISO]), 8, 1.0)
    with pytest.raises(ValueError, match='out_size=21'):
        build_kernels(torch.tensor([ISO]), 23, 1.0)
    with pytest.raises(ValueError, match='kind codes'):
        build_kernels(torch.tensor([8]), 7, 1.0)
    with pytest.raises(ValueError, match='out_size'):
        build_kernels(torch.tensor([ISO]), 7, 1.0, out_size=20)


# -- 6. no per-sample Python loop -------------------------------------------------------------------
class _CountTorchCalls(torch.overrides.TorchFunctionMode):

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def test_work_is_batched_not_looped():
    """The number of torch operations does not grow with the batch size."""
    synth = KernelSynthesizer(official_opt())
    synth.sample(2, torch.Generator().manual_seed(0))  # fill the grid cache
    counts = {}
    for batch in (4, 512):
        with _CountTorchCalls() as counter:
            synth.sample(batch, torch.Generator().manual_seed(0))
        counts[batch] = counter.calls
    assert counts[4] == counts[512], counts
    assert counts[4] < 1000
