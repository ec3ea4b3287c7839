"""Test-time padding and tiling: the one place validation, ``realsr-test``, ``realsr-infer``,
``realsr-export`` and the benchmark tools run a network on an image of any size.

* :func:`size_multiple` -- the multiple an arch needs its input height/width to be (RRDBNet's
  pixel-unshuffle factor, a window arch's window), read from the network itself;
* :func:`pad_to_multiple` / :func:`flip_pad_to_next_multiple` -- the two bottom/right padding
  conventions (BasicSR's reflect padding; the official SwinIR/DRCT test scripts' mirror padding);
* :func:`tiled_forward` -- overlapping tiles so that large images fit in memory;
* :func:`padded_forward` -- all of the above around one network call, output cropped to
  ``scale x`` the input size.

Each ``tile_size`` x ``tile_size`` tile is cut with ``tile_pad`` pixels of context on every side
(less at the image border), run through the network, and only its centre is pasted into the
output. With a context at least as wide as the network's receptive-field radius the result equals
the untiled output up to float rounding.
"""
import math

import torch
from torch.nn import functional as F

TEST_PAD_MODES = ('reflect', 'flip')


def size_multiple(net):
    """The multiple the input height/width must have: RRDBNet's pixel-unshuffle factor (x2: 2,
    x1: 4), a window-based arch's window (``size_multiple()`` or ``window_size``), else 1.
    ``net`` may be wrapped (DDP's ``module``)."""
    net = getattr(net, 'module', net)
    multiple = 1
    unshuffle = getattr(net, 'unshuffle', None)
    if isinstance(unshuffle, int) and unshuffle > 1:
        multiple = math.lcm(multiple, unshuffle)
    own = getattr(net, 'size_multiple', None)
    if callable(own):
        multiple = math.lcm(multiple, int(own()))
    elif isinstance(getattr(net, 'window_size', None), int):
        multiple = math.lcm(multiple, net.window_size)
    return multiple


def pad_to_multiple(x, multiple):
    """Reflect-pad bottom/right so H and W are multiples of ``multiple`` (replicate where the pad
    is not smaller than the side, which reflect cannot do); returns (x, pad_h, pad_w)."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h or pad_w:
        mode = 'reflect' if pad_h < h and pad_w < w else 'replicate'
        x = F.pad(x, (0, pad_w, 0, pad_h), mode)
    return x, pad_h, pad_w


def flip_pad_to_next_multiple(x, multiple):
    """Pad bottom/right to (size // multiple + 1) * multiple with the flipped image (edge row/column
    repeated); always adds 1..multiple rows and columns. Returns (x, pad_h, pad_w)."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (h // multiple + 1) * multiple - h, (w // multiple + 1) * multiple - w
    while x.shape[-2] < h + pad_h:  # one mirror copy suffices unless the image is smaller than the pad
        x = torch.cat([x, torch.flip(x, [-2])], -2)
    while x.shape[-1] < w + pad_w:
        x = torch.cat([x, torch.flip(x, [-1])], -1)
    return x[..., :h + pad_h, :w + pad_w], pad_h, pad_w


def align_tile(tile_size, tile_pad, multiple):
    """``(tile_size, tile_pad)`` rounded up to multiples of ``multiple``: on an image padded to
    that multiple every tile (with its context) is then one too, and needs no padding of its own."""
    m = max(1, int(multiple))
    return -(-tile_size // m) * m, -(-tile_pad // m) * m


@torch.no_grad()
def tiled_forward(net, x, tile_size, tile_pad=10):
    if tile_size <= 0:
        raise ValueError(f'tile_size must be positive, got {tile_size}')
    b, c, h, w = x.shape
    output = None
    tiles_y, tiles_x = math.ceil(h / tile_size), math.ceil(w / tile_size)
    for ty in range(tiles_y):
        for tx in range(tiles_x):
            y0, x0 = ty * tile_size, tx * tile_size
            y1, x1 = min(y0 + tile_size, h), min(x0 + tile_size, w)
            py0, px0 = max(y0 - tile_pad, 0), max(x0 - tile_pad, 0)
            py1, px1 = min(y1 + tile_pad, h), min(x1 + tile_pad, w)
            out_tile = net(x[:, :, py0:py1, px0:px1])
            s = out_tile.shape[-1] // (px1 - px0)  # the network's real scale
            if output is None:
                output = x.new_zeros((b, out_tile.shape[1], h * s, w * s))
            output[:, :, y0 * s:y1 * s, x0 * s:x1 * s] = out_tile[:, :, (y0 - py0) * s:(y1 - py0) * s,
                                                                  (x0 - px0) * s:(x1 - px0) * s]
    return output


@torch.no_grad()
def padded_forward(net, x, multiple=1, tile_size=0, tile_pad=10, pad_mode='reflect'):
    """``net(x)`` for an input of any size: pad bottom/right to ``multiple`` (``pad_mode`` 'reflect'
    or 'flip', see above), run whole or in ``tile_size`` tiles (0: whole), crop to ``scale x`` the
    input. Border tiles that are not multiples are padded and cropped on their own, so any
    ``tile_size`` works (:func:`align_tile` avoids that). A network with ``condition(x)`` (DASR /
    CDDNet's :class:`~realsr.archs.dasr_arch.PredictorConditionedNet`) takes its expert weights
    from the whole padded image, so its tiles agree with an untiled run."""
    if pad_mode not in TEST_PAD_MODES:
        raise ValueError(f'pad_mode={pad_mode!r}; use one of {TEST_PAD_MODES}.')
    multiple = max(1, int(multiple))
    h, w = x.shape[-2:]
    if multiple > 1:
        x = (flip_pad_to_next_multiple if pad_mode == 'flip' else pad_to_multiple)(x, multiple)[0]

    def run(tile):
        tile, pad_h, pad_w = pad_to_multiple(tile, multiple)  # only border tiles can need it
        out = net(tile)
        if not (pad_h or pad_w):
            return out
        s = out.shape[-1] // tile.shape[-1]
        return out[..., :(tile.shape[-2] - pad_h) * s, :(tile.shape[-1] - pad_w) * s]

    condition = getattr(net, 'condition', None)
    if condition is not None:
        condition(x)
    try:
        if tile_size and tile_size > 0 and (tile_size < x.shape[-2] or tile_size < x.shape[-1]):
            out = tiled_forward(run, x, tile_size, tile_pad)
        else:
            out = run(x)
    finally:
        if condition is not None:
            condition(None)
    s = out.shape[-1] // x.shape[-1]
    return out[..., :h * s, :w * s]
