"""Perceptual (VGG feature) and style (Gram matrix) losses (BasicSR ``PerceptualLoss``).

Johnson et al., "Perceptual Losses for Real-Time Style Transfer and Super-Resolution", ECCV 2016;
Gatys et al., "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016.
"""
import difflib

import torch
from torch import nn
from torch.nn import functional as F

from realsr.archs.vgg_arch import VGG_TYPES, VGGFeatureExtractor, vgg_layer_names
from realsr.registry import LOSS_REGISTRY

_CRITERIA = ('l1', 'l2', 'fro')


def gram_matrix(feat):
    """(n, c, h, w) -> (n, c, c) Gram matrix divided by c*h*w."""
    n, c, h, w = feat.shape
    flat = feat.reshape(n, c, h * w)
    return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


@LOSS_REGISTRY.register()
class PerceptualLoss(nn.Module):
    """Weighted distance between VGG features of output and target, plus an optional style term.

    ``forward(x, gt)`` returns ``(percep, style)``; a term whose weight is not positive is None.
    percep = perceptual_weight * sum_k layer_weights[k] * dist(F_k(x), F_k(gt)), and style the same
    with Gram matrices and style_weight. ``dist`` is mean |.| (l1), mean squared (l2) or the
    Frobenius norm of the whole difference tensor (fro). ``gt`` is detached; the VGG is frozen.

    Args:
        layer_weights: ``{layer name: weight}``, e.g. ``{'conv5_4': 1.0}`` (conv = before ReLU).
        vgg_type, use_input_norm, range_norm, pretrained_path: see :class:`VGGFeatureExtractor`.
        perceptual_weight, style_weight: term weights. criterion: 'l1', 'l2' or 'fro'.
    """

    @staticmethod
    def option_json_schema():
        """Editor-schema refinements of the arguments (realsr-options schema): the layer names."""
        names = sorted({n for t in VGG_TYPES for n in vgg_layer_names(t)})
        return {'layer_weights': {'type': 'object', 'propertyNames': {'enum': names}}}

    @staticmethod
    def option_problems(path, layer_weights=None, vgg_type='vgg19', criterion='l1', **_):
        """Problems of these arguments, found by the option checker before any network is built."""
        if vgg_type not in VGG_TYPES:
            return [f"'{path}.vgg_type' must be one of {', '.join(VGG_TYPES)}, got {vgg_type!r}"]
        problems = [] if criterion in _CRITERIA else [
            f"'{path}.criterion' must be one of {', '.join(_CRITERIA)}, got {criterion!r}"]
        names = vgg_layer_names(vgg_type)
        for layer in layer_weights if isinstance(layer_weights, dict) else ():
            if layer not in names:
                close = difflib.get_close_matches(str(layer), names, n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'? " if close else ''
                problems.append(f"unknown key '{path}.layer_weights.{layer}': {hint}{vgg_type} has no such layer")
        return problems

    def __init__(self, layer_weights, vgg_type='vgg19', use_input_norm=True, range_norm=False,
                 perceptual_weight=1.0, style_weight=0., criterion='l1', pretrained_path=None):
        super().__init__()
        if criterion not in _CRITERIA:
            raise ValueError(f'PerceptualLoss: criterion must be one of {_CRITERIA}, got {criterion!r}.')
        self.layer_weights = dict(layer_weights)
        self.perceptual_weight = perceptual_weight
        self.style_weight = style_weight
        self.criterion_type = criterion
        self.vgg = VGGFeatureExtractor(
            layer_name_list=list(self.layer_weights), vgg_type=vgg_type, use_input_norm=use_input_norm,
            range_norm=range_norm, pretrained_path=pretrained_path)

    def _dist(self, a, b):
        if self.criterion_type == 'l1':
            return F.l1_loss(a, b)
        if self.criterion_type == 'l2':
            return F.mse_loss(a, b)
        return torch.linalg.vector_norm(a - b)  # Frobenius norm of the whole tensor

    def _weighted_sum(self, feats_x, feats_gt, transform):
        total = 0
        for name, feat in feats_x.items():
            total = total + self._dist(transform(feat), transform(feats_gt[name])) * self.layer_weights[name]
        return total

    def forward(self, x, gt):
        # the VGG runs in whatever precision the caller's autocast gives; the distances in fp32
        feats_x = {k: v.float() for k, v in self.vgg(x).items()}
        feats_gt = {k: v.float() for k, v in self.vgg(gt.detach()).items()}
        with torch.autocast(x.device.type, enabled=False):
            return self._terms(feats_x, feats_gt)

    def _terms(self, feats_x, feats_gt):
        percep = style = None
        if self.perceptual_weight > 0:
            percep = self._weighted_sum(feats_x, feats_gt, lambda f: f) * self.perceptual_weight
        if self.style_weight > 0:
            style = self._weighted_sum(feats_x, feats_gt, gram_matrix) * self.style_weight
        return percep, style
