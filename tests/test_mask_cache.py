"""SwinIR/DRCT shift-mask cache and image mean: one small LRU cache of bool masks per model, shared
by all its shifted blocks (bounded memory whatever the number of input sizes), outputs equal to
a freshly built model at every size (no stale mask), and ``mean`` as a non-persistent buffer."""
import copy
import pickle

import pytest
import torch

from realsr.archs.drct_arch import DRCT
from realsr.archs.swinir_arch import (_MASK_CACHE_SIZE, ShiftMaskCache, SwinIR, SwinTransformerBlock, WindowAttention,
                                      shift_attention_mask, shift_region_mask)

# small constructor arguments (as in tests/test_swinir.py and tests/test_drct.py)
CONFIGS = {
    # 2 RSTBs x 2 blocks: 2 shifted blocks, window 4, shift 2
    'swinir': (SwinIR, dict(upscale=2, img_size=16, window_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 2],
                            mlp_ratio=2, upsampler='pixelshuffle', resi_connection='1conv')),
    # 2 RDGs x (swin2, swin4): 4 shifted blocks, window 4, shift 2
    'drct': (DRCT, dict(upscale=2, img_size=16, window_size=4, embed_dim=12, depths=[1, 1], num_heads=[4, 4], gc=4,
                        mlp_ratio=2, upsampler='pixelshuffle', resi_connection='1conv')),
}
WINDOW = 4
# 20 distinct input sizes (multiples of the window), none of them the construction size 16x16
SIZES = [(4 * (1 + i % 5), (8, 12, 20, 24)[i // 5]) for i in range(20)]
assert len(set(SIZES)) == 20 and (16, 16) not in SIZES


def _build(name, seed=0):
    cls, kwargs = CONFIGS[name]
    torch.manual_seed(seed)
    model = cls(**kwargs)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # weights at a scale where the attention (and so the mask) matters
        for pname, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(noise * 0.5 if 'relative_position_bias_table' in pname else
                    noise * p[0].numel()**-0.5 if p.ndim >= 2 else noise * 0.05)
    return model.eval()


def _fresh_copy(model):
    """A newly built model with the same weights (and an empty mask cache)."""
    name = 'swinir' if isinstance(model, SwinIR) else 'drct'
    fresh = CONFIGS[name][0](**CONFIGS[name][1])
    fresh.load_state_dict(model.state_dict(), strict=True)
    return fresh.to(next(model.parameters()).dtype).eval()


def _shifted(model):
    return [m for m in model.modules() if isinstance(m, SwinTransformerBlock) and m.shift_size > 0]


def _cache_bytes(cache):
    return sum(t.numel() * t.element_size() for t in cache.tensors())


@torch.no_grad()
def _run(model, x):
    return model(x)


# -- bounded memory ----------------------------------------------------------------------------------
@pytest.mark.parametrize('name', list(CONFIGS))
def test_cache_memory_bounded_over_20_sizes(name):
    """Bound: at most _MASK_CACHE_SIZE (4) masks, each a bool (nW, ws², ws²) tensor, i.e. H * W * ws²
    bytes for an H x W input (nW = H*W / ws² windows) -- so at most 4 * max(H * W) * ws² bytes over the
    sizes seen, here 4 * 20 * 24 * 16 = 30720 bytes, for one cache shared by all shifted blocks.
    The previous per-block float32 caches (16 sizes per block) held up to 4 bytes * 16 sizes * blocks."""
    model = _build(name)
    shifted = _shifted(model)
    assert len(shifted) == (2 if name == 'swinir' else 4)
    cache = shifted[0].mask_cache
    assert model.mask_caches() == [cache] and all(b.mask_cache is cache for b in shifted)
    bound = _MASK_CACHE_SIZE * max(h * w for h, w in SIZES) * WINDOW**2
    assert bound == 30720
    for i, (h, w) in enumerate(SIZES):
        _run(model, torch.rand(1, 3, h, w))
        assert len(cache) == min(i + 1, _MASK_CACHE_SIZE)
        assert all(t.dtype == torch.bool for t in cache.tensors())
        assert _cache_bytes(cache) == cache.nbytes() <= bound
        # exactly one mask per remembered size, whatever the number of shifted blocks
        assert _cache_bytes(cache) == sum(hh * ww * WINDOW**2 for hh, ww, *_ in cache.keys())
    # least recently used dropped first: the last 4 sizes remain, in use order
    assert cache.keys() == [(h, w, WINDOW, WINDOW // 2, torch.device('cpu')) for h, w in SIZES[-_MASK_CACHE_SIZE:]]
    assert not any('mask_cache' in k or '_masks' in k for k in model.state_dict())


def test_cache_lru_order_and_hits():
    cache = ShiftMaskCache(max_entries=2)
    a = cache.get(8, 8, 4, 2, 'cpu')
    assert cache.get(8, 8, 4, 2, torch.device('cpu')) is a  # hit: the same tensor, nothing rebuilt
    b = cache.get(8, 12, 4, 2, 'cpu')
    assert cache.get(8, 8, 4, 2, 'cpu') is a  # a becomes the most recently used
    cache.get(12, 8, 4, 2, 'cpu')  # evicts b, not a
    assert [k[:2] for k in cache.keys()] == [(8, 8), (12, 8)]
    assert cache.get(8, 12, 4, 2, 'cpu') is not b
    assert len(cache) == 2
    with pytest.raises(ValueError, match='max_entries'):
        ShiftMaskCache(0)


def test_bool_mask_values_and_attention_equal_float_path():
    for h, w, ws, s in [(8, 12, 4, 2), (16, 16, 8, 4), (4, 4, 2, 1), (24, 8, 8, 3)]:
        assert torch.equal(shift_region_mask(h, w, ws, s), shift_attention_mask(h, w, ws, s) != 0)
        assert set(shift_attention_mask(h, w, ws, s).unique().tolist()) <= {0.0, -100.0}
    torch.manual_seed(0)
    attn = WindowAttention(8, (4, 4), 2)
    with torch.no_grad():
        attn.relative_position_bias_table.normal_(0, 0.5)
    bool_mask = shift_region_mask(8, 12, 4, 2)
    float_mask = shift_attention_mask(8, 12, 4, 2)
    x = torch.randn(2 * bool_mask.shape[0], 16, 8)
    for impl in ('sdpa', 'explicit'):
        attn.attn_impl = impl
        outs, grads = [], []
        for mask in (float_mask, bool_mask):
            attn.zero_grad()
            out = attn(x, mask)
            out.square().sum().backward()
            outs.append(out.detach())
            grads.append(attn.relative_position_bias_table.grad.clone())
        assert torch.equal(outs[0], outs[1]) and torch.equal(grads[0], grads[1])


# -- no stale masks ------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', list(CONFIGS))
def test_cached_path_equals_fresh_model_at_each_size(name):
    """Sizes A, B, A (cache hit), the construction size, enough new sizes to evict A, then A again and B:
    every output equals a freshly built model's (empty cache) on the same input, bit for bit."""
    model = _build(name)
    a, b = (8, 12), (12, 8)  # same number of windows (6): a mask reused across sizes would not fail on shape
    seq = [a, b, a, (16, 16), (8, 8), (4, 8), (20, 4), (8, 20), a, b]
    gen = torch.Generator().manual_seed(3)
    first = {}
    for hw in seq:
        x = torch.rand(2, 3, *hw, generator=gen)
        out = _run(model, x)
        assert torch.equal(out, _run(_fresh_copy(model), x)), hw
        if hw in first:  # same input as the first time at this size gives the same output
            assert torch.equal(_run(model, first[hw][0]), first[hw][1])
        else:
            first[hw] = (x, out)
    cache = model.mask_caches()[0]
    for h, w, ws, s, _ in cache.keys():
        assert torch.equal(cache.get(h, w, ws, s, 'cpu'), shift_attention_mask(h, w, ws, s) != 0)


@pytest.mark.parametrize('name', list(CONFIGS))
def test_cached_path_equals_fresh_model_bf16_and_explicit(name):
    model = _build(name).set_attn_impl('explicit')
    x = torch.rand(1, 3, 12, 8)
    ref = _run(_fresh_copy(model).set_attn_impl('explicit'), x)
    _run(model, torch.rand(1, 3, 8, 12))
    assert torch.equal(_run(model, x), ref)
    model = model.set_attn_impl('sdpa').to(torch.bfloat16)
    xb = x.bfloat16()
    _run(model, xb)  # cached at 12x8 already (bool masks do not depend on the dtype)
    assert torch.equal(_run(model, xb), _run(_fresh_copy(model), xb))


# -- one cache per model: copies, pickling, train() -----------------------------------------------------
def test_copies_get_their_own_shared_empty_cache():
    model = _build('drct')
    _run(model, torch.rand(1, 3, 8, 12))
    cache = model.mask_caches()[0]
    assert len(cache) == 1
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        caches = clone.mask_caches()
        assert len(caches) == 1 and caches[0] is not cache and len(caches[0]) == 0
        assert all(b.mask_cache is caches[0] for b in clone.modules() if isinstance(b, SwinTransformerBlock))
        x = torch.rand(1, 3, 8, 12)
        assert torch.equal(_run(clone, x), _run(model, x))
    assert len(cache) == 1


def test_train_mode_empties_the_cache():
    model = _build('swinir')
    _run(model, torch.rand(1, 3, 8, 12))
    cache = model.mask_caches()[0]
    assert len(cache) == 1
    model.eval()  # staying in eval keeps it
    assert len(cache) == 1
    model.train()  # eval -> train (after validation): validation-size masks are dropped
    assert len(cache) == 0
    model(torch.rand(1, 3, 8, 12)).mean().backward()  # training at another size still works
    assert len(cache) == 1
    model.train()  # already training: kept
    assert len(cache) == 1


def test_standalone_block_has_its_own_cache():
    block = SwinTransformerBlock(8, (8, 8), 2, window_size=4, shift_size=2)
    assert isinstance(block.mask_cache, ShiftMaskCache)
    x = torch.rand(1, 8 * 12, 8)
    with torch.no_grad():
        block(x, (8, 12))
    assert len(block.mask_cache) == 1


# -- mean ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize('name', list(CONFIGS))
def test_mean_is_a_non_persistent_buffer(name):
    model = _build(name)
    buffers = dict(model.named_buffers())
    assert 'mean' in buffers and buffers['mean'] is model.mean
    assert torch.equal(model.mean, torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1))
    sd = model.state_dict()
    assert not any(k == 'mean' or k.endswith('.mean') for k in sd)
    _fresh_copy(model)  # strict load of that state dict
    x = torch.rand(1, 3, 16, 16)
    assert model.image_mean(x) is model.mean  # no per-call conversion when the dtype matches
    # moves with the module: dtype and device
    model.to(torch.float64)
    assert model.mean.dtype == torch.float64
    assert torch.equal(model.mean, torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1).double())
    assert _run(model, x.double()).dtype == torch.float64
    model.to('meta')
    assert model.mean.device.type == 'meta'
    assert dict(model.named_buffers())['mean'] is model.mean
    assert set(model.state_dict()) == set(sd)


def test_mean_cast_when_input_dtype_differs():
    model = _build('swinir')
    x = torch.rand(1, 3, 16, 16)
    assert model.image_mean(x.half()).dtype == torch.float16
    assert torch.equal(model.image_mean(x.half()), model.mean.half())
