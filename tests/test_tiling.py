"""realsr.utils.tiling: the one place of test-time padding and tiling (validation, realsr-test,
realsr-infer, realsr-export)."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from realsr.archs import build_network
from realsr.utils.tiling import (align_tile, flip_pad_to_next_multiple, pad_to_multiple, padded_forward,
                                 size_multiple, tiled_forward)


class WindowNet(nn.Module):
    """A conv net that refuses sizes that are not multiples of 4 (like a window arch), x2."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 12, 3, 1, 1)
        self.calls = []

    def size_multiple(self):
        return 4

    def forward(self, x):
        assert x.shape[-2] % 4 == 0 and x.shape[-1] % 4 == 0, x.shape
        self.calls.append(tuple(x.shape[-2:]))
        return F.pixel_shuffle(self.conv(x), 2)


def test_size_multiple_reads_the_network():
    rrdb = {'type': 'RRDBNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 4, 'num_block': 1, 'num_grow_ch': 4}
    assert size_multiple(build_network({**rrdb, 'scale': 2})) == 2
    assert size_multiple(build_network({**rrdb, 'scale': 1})) == 4
    assert size_multiple(build_network({**rrdb, 'scale': 4})) == 1
    swinir = build_network({'type': 'SwinIR', 'upscale': 2, 'img_size': 12, 'window_size': 6, 'embed_dim': 6,
                            'depths': [2], 'num_heads': [2], 'upsampler': 'pixelshuffle'})
    assert size_multiple(swinir) == 6
    wrapped = nn.Module()
    wrapped.module = WindowNet()  # DDP / DataParallel keep the network in .module
    assert size_multiple(wrapped) == 4


def test_pad_helpers():
    x = torch.arange(2 * 5, dtype=torch.float32).view(1, 1, 2, 5)
    padded, ph, pw = pad_to_multiple(x, 4)
    assert (ph, pw) == (2, 3) and padded.shape[-2:] == (4, 8)
    # a pad as large as the side cannot reflect: replicate instead
    assert torch.equal(padded[0, 0, 2:, :5], x[0, 0, 1:2].expand(2, 5))
    same, ph, pw = pad_to_multiple(x, 1)
    assert same is x and (ph, pw) == (0, 0)
    flipped, ph, pw = flip_pad_to_next_multiple(torch.arange(4.).view(1, 1, 1, 4), 4)
    assert pw == 4 and flipped[0, 0, 0].tolist() == [0, 1, 2, 3, 3, 2, 1, 0]
    assert align_tile(10, 5, 4) == (12, 8) and align_tile(10, 5, 1) == (10, 5)


def test_padded_forward_pads_runs_and_crops_exactly():
    net = WindowNet()
    x = torch.rand(1, 3, 10, 13)
    out = padded_forward(net, x, 4)
    with torch.no_grad():
        manual = net(F.pad(x, (0, 3, 0, 2), mode='reflect'))[..., :20, :26]
    assert out.shape == (1, 3, 20, 26) and torch.equal(out, manual)  # same code path, same process
    flip = padded_forward(net, x, 4, pad_mode='flip')
    with torch.no_grad():
        manual = net(flip_pad_to_next_multiple(x, 4)[0])[..., :20, :26]
    assert torch.equal(flip, manual)
    with pytest.raises(ValueError, match="pad_mode='mirror'"):
        padded_forward(net, x, 4, pad_mode='mirror')


def test_tiles_of_any_size_are_padded_alone_and_match_the_whole_image():
    net = WindowNet()
    x = torch.rand(1, 3, 18, 22)
    whole = padded_forward(net, x, 4)
    net.calls.clear()
    tiled = padded_forward(net, x, 4, tile_size=7, tile_pad=3)  # 7 and 3 are not multiples of 4
    assert len(net.calls) == 12 and all(h % 4 == 0 and w % 4 == 0 for h, w in net.calls)
    # a 3x3 conv sees 1 pixel around: with 3 pixels of context the tiles agree up to float rounding
    # of the border tiles' extra padding (none reaches the kept centre)
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)
    # a tile as large as the image runs the image whole
    net.calls.clear()
    assert torch.equal(padded_forward(net, x, 4, tile_size=64), whole) and len(net.calls) == 1


def test_a_conditioned_net_takes_its_condition_from_the_whole_padded_image():
    seen = []

    class Conditioned(nn.Module):
        fixed = None

        def condition(self, x):
            seen.append(None if x is None else tuple(x.shape))
            self.fixed = None if x is None else x.mean()

        def forward(self, x):
            return x * self.fixed

    x = torch.rand(1, 3, 9, 9)
    out = padded_forward(Conditioned(), x, 2, tile_size=4, tile_pad=2)
    assert seen == [(1, 3, 10, 10), None]  # once, on the padded image; cleared after
    torch.testing.assert_close(out, x * F.pad(x, (0, 1, 0, 1), mode='reflect').mean())


def test_tiled_forward_needs_a_positive_tile():
    with pytest.raises(ValueError, match='tile_size must be positive'):
        tiled_forward(nn.Identity(), torch.zeros(1, 1, 4, 4), 0)
