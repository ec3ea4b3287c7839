"""Tiled inference: run a network on overlapping tiles so large images fit in memory.

Each ``tile_size`` x ``tile_size`` tile is cut with ``tile_pad`` pixels of context on every
side (less at the image border), run through the network, and only its centre is pasted into
the output. With a context at least as wide as the network's receptive-field radius the result
equals the untiled output up to float rounding.
"""
import math

import torch


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
