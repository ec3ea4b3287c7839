"""CrossDropout (CDDNet): column and row stripes, statistics, shapes from the input, eval identity."""
import pytest
import torch

from realsr.archs import build_network
from realsr.regularizers import build_regularizers
from realsr.regularizers.cross_dropout import CrossDropout


def test_columns_and_rows_are_dropped_with_their_rates_and_scaled():
    torch.manual_seed(0)
    reg = CrossDropout(p_col=0.2, p_row=0.05)
    x = torch.ones(64, 3, 40, 50)
    out = reg.apply(x, 0, 'conv_last')
    # a dropped column is zero for every channel and row of that sample; same for rows
    col_dropped = (out == 0).all(dim=1).all(dim=1)  # (b, w)
    row_dropped = (out == 0).all(dim=1).all(dim=2)  # (b, h)
    n_cols, n_rows = col_dropped.numel(), row_dropped.numel()
    assert abs(col_dropped.float().mean().item() - 0.2) < 4 * (0.2 * 0.8 / n_cols)**0.5
    # a row counts as dropped when its own mask is 0 (or, rarely, every column is dropped)
    assert abs(row_dropped.float().mean().item() - 0.05) < 4 * (0.05 * 0.95 / n_rows)**0.5 + 1e-3
    kept = out[out != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (0.8 * 0.95)))


def test_mask_shape_follows_the_input():
    """The reference hard-codes a (6, 1, 256, 1) row mask; any batch and size work here."""
    reg = CrossDropout()
    for shape in ((2, 8, 16, 16), (5, 4, 33, 7)):
        assert reg.apply(torch.rand(shape), 0, 'conv_last').shape == shape


def test_eval_identity_training_effect_and_gradients():
    opt = {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 2, 'upscale': 4}
    torch.manual_seed(0)
    plain = build_network(opt).eval()
    torch.manual_seed(0)
    net = build_network(opt)
    build_regularizers([{'type': 'CrossDropout', 'p_col': 0.2, 'p_row': 0.01}], net)
    x = torch.rand(2, 3, 16, 16)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), plain(x))
    net.train()
    out = net(x)
    assert not torch.allclose(out, plain(x))
    out.mean().backward()
    assert net.conv_first.weight.grad is not None


def test_bad_probabilities_are_named():
    with pytest.raises(ValueError, match='p_col'):
        CrossDropout(p_col=1.0)
    with pytest.raises(ValueError, match='p_row'):
        CrossDropout(p_row=-0.1)
