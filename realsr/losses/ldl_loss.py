"""The LDL artifact map (Liang et al., "Details or Artifacts: A Locally Discriminative Learning
Approach to Realistic Image Super-Resolution", CVPR 2022), used by CDDNet's artifact loss.

The map weights each pixel of the SR output by how likely it is an artifact: pixels where the
residual to the GT is locally irregular (high local variance), in images whose residual is
irregular overall, and only where the trained generator does worse than its EMA copy (the EMA is
the more stable model, so a pixel the EMA gets right is treated as an artifact of the current
generator). The loss is then ``criterion(map * sr, map * gt)``.

Not a registered loss: a function of three images, called by the model (``artifacts_opt`` picks
the criterion). The map is not detached, as in the reference: gradients also reach the generator
through the two variance weights.
"""
import torch
from torch.nn import functional as F


def local_variance(residual, ksize=7):
    """Unbiased variance of ``residual`` (b, 1, h, w) over each ``ksize`` x ``ksize`` window of its
    reflect-padded copy; same size as ``residual``."""
    pad = (ksize - 1) // 2
    padded = F.pad(residual, pad=[pad, pad, pad, pad], mode='reflect')
    windows = padded.unfold(2, ksize, 1).unfold(3, ksize, 1)  # (b, 1, h, w, k, k)
    return torch.var(windows, dim=(-1, -2), unbiased=True)


def get_refined_artifact_map(img_gt, img_output, img_ema, ksize=7):
    """The LDL weight map (b, 1, h, w) for the SR output ``img_output`` of ``img_gt``.

    r = sum over channels of |gt - output|; map = var(r over C, H, W per image) ** (1/5)
    * local_variance(r, ksize); zero wherever r < sum over channels of |gt - ema output|.
    """
    residual_ema = torch.sum(torch.abs(img_gt - img_ema), 1, keepdim=True)
    residual_sr = torch.sum(torch.abs(img_gt - img_output), 1, keepdim=True)
    patch_weight = torch.var(residual_sr, dim=(-1, -2, -3), keepdim=True)**(1 / 5)
    weight = patch_weight * local_variance(residual_sr, ksize)
    return weight.masked_fill(residual_sr < residual_ema, 0)
