"""Channel saliency maps (CSM): how much each feature channel at a site matters to the output.

The Reflash Dropout paper analyses SR networks with two per-channel measures, computed on the
features at one place of the network (a *site*, written as for regularizers: ``'conv_last:input'``
is the features entering ``conv_last``, ``'body3:output'`` what ``body3`` returns; see
:mod:`realsr.regularizers.base`). For one image, with F the (C, H, W) features at the site and
I = net(x) the SR output (RGB, [0, 1] scale):

**Gradient attribution.** The objective is the edge energy of the output,

    A(I) = sum_{c, i<H-1, j<W-1} sqrt((I[c,i,j] - I[c,i+1,j])^2 + (I[c,i,j] - I[c,i,j+1])^2 + eps),

(eps = 1e-12 only keeps the gradient finite where the image is flat). One backward pass gives
G = dA/dF (a plain gradient, as the paper's tool; not integrated gradients). It is normalised by
its largest magnitude over the whole site, S = |G| / max|G| (so S is in [0, 1] and each image
counts alike), and channel c's attribution is ``a_c = sum_{h,w} S[c,h,w]``. Over several images
``a_c`` is the mean of the per-image values; ``share_c = a_c / sum_k a_k`` (sums to 1; a network
that uses every channel alike has share 1/C everywhere).

**Channel-ablation PSNR.** For each channel c the features at the site are replaced by
F' = F * m_c with m_c zero at channel c and one elsewhere (``mode='zero'``), or, as the paper's
tool does, also rescaled to keep the L1 mass, F' = F * m_c * sum|F| / (sum|F| - sum|F_c|)
(``mode='rescale'``). The rest of the network runs on F' and the result is quantised like a saved
image (``round(clamp(I', 0, 1) * 255)``) and compared with the GT: ``psnr_c = PSNR(I'_c, GT)``
(RGB, ``crop_border`` pixels cropped, 0 by default = the full image as the paper's tool). The
reference is the unablated output, ``ref = PSNR(I, GT)``, and ``drop_c = ref - psnr_c`` (dB; larger
means the channel matters more; it can be negative when removing a channel helps). Without GT
the ablated output is compared with the unablated one: ``psnr_c = PSNR(I'_c, I)`` and ``ref`` is
the PSNR of the smallest possible change, one pixel value off by one level,
``10 log10(255^2 * N)`` with N = H*W*3, so ``drop_c >= 0`` and is 0 exactly when the ablation
leaves the saved image unchanged. Several images: PSNRs and drops are averaged per image.

Ablations run as batches of masks (``chunk`` of them per forward pass). When the network allows
it, the part before the site runs once on the batch-1 input and the hook expands the features to
the batch of masks (PyTorch broadcasting then serves skip connections from before the site); a
probe of two masks is checked against repeating the input, and the tool falls back to that otherwise.
Every batch has the same size (padded with unablated copies), so the reference and the ablated
outputs go through exactly the same computation.

Plots (``bar_chart``, ``heatmap_grid``, ``scatter_plot``) are drawn with OpenCV into BGR uint8
arrays; :func:`write_report` writes them as PNG together with CSV tables.
"""
import csv
import math
import os
from dataclasses import dataclass, field
from typing import List

import cv2
import numpy as np
import torch

from realsr.metrics.psnr_ssim import calculate_psnr
from realsr.regularizers.base import resolve_sites
from realsr.utils.img_util import imwrite, tensor2img

EDGE_EPS = 1e-12


class SiteError(ValueError):
    """A site that cannot be analysed (matches nothing or several modules, is never reached, runs
    more than once per forward pass, or does not carry an (N, C, H, W) tensor)."""


# ---------------------------------------------------------------------------------------------
# sites and hooks
# ---------------------------------------------------------------------------------------------
def resolve_site(net, site):
    """``[(site, module name, module, side)]`` for every module the site matches (glob patterns
    allowed, as for regularizers); a site that matches nothing raises :class:`SiteError` listing
    the network's module names."""
    try:
        return resolve_sites(net, [site])
    except ValueError as err:
        raise SiteError(f'csm: {err}') from None


def _single_site(net, site):
    matches = resolve_site(net, site)
    if len(matches) > 1:
        names = ', '.join(f'{name}:{side}' for _, name, _, side in matches)
        raise SiteError(f"csm: site '{site}' matches {len(matches)} modules ({names}); analyse them one at a time")
    return matches[0]


def _tapped_forward(net, x, module, name, side, transform):
    """``net(x)`` with the tensor at the site replaced by ``transform(tensor)``."""
    calls = [0]

    def apply(t):
        calls[0] += 1
        if calls[0] > 1:
            raise SiteError(f"csm: module '{name}' runs more than once per forward pass (it is shared), so "
                            f"'{name}:{side}' does not name one set of features; pick a module that runs once")
        if not torch.is_tensor(t) or t.dim() != 4:
            what = tuple(t.shape) if torch.is_tensor(t) else type(t).__name__
            raise SiteError(f"csm: the {side} of '{name}' is {what}, not an (N, C, H, W) feature tensor")
        return transform(t)

    if side == 'input':
        handle = module.register_forward_pre_hook(lambda m, args: (apply(args[0]), ) + tuple(args[1:]))
    else:
        handle = module.register_forward_hook(lambda m, args, out: apply(out))
    try:
        out = net(x)
    finally:
        handle.remove()
    if calls[0] == 0:
        raise SiteError(f"csm: module '{name}' is not run by the forward pass of {type(net).__name__}")
    if not torch.is_tensor(out):
        raise SiteError(f'csm: the network returns {type(out).__name__}, not an image tensor')
    return out


class _FrozenParams:
    """Turn off ``requires_grad`` of the parameters for a while (no graph above the site)."""

    def __init__(self, net):
        self.params = list(net.parameters())

    def __enter__(self):
        self.flags = [p.requires_grad for p in self.params]
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc):
        for p, flag in zip(self.params, self.flags):
            p.requires_grad_(flag)


# ---------------------------------------------------------------------------------------------
# gradient attribution
# ---------------------------------------------------------------------------------------------
def edge_energy(img, eps=EDGE_EPS):
    """The attribution objective A(I): sum of the gradient magnitudes of an (N, C, H, W) image."""
    d_down = img[..., :-1, :-1] - img[..., 1:, :-1]
    d_right = img[..., :-1, :-1] - img[..., :-1, 1:]
    return torch.sqrt(d_down * d_down + d_right * d_right + eps).sum()


def channel_attribution(net, x, site):
    """Gradient attribution of one image ``x`` (1, 3, h, w) at ``site``.

    Returns ``(attribution (C,), saliency (C, H, W), features (C, H, W), output (1, 3, H', W'))``:
    ``saliency = |dA/dF| / max|dA/dF|`` and ``attribution[c] = saliency[c].sum()``.
    """
    _, name, module, side = _single_site(net, site) if isinstance(site, str) else site
    if x.dim() == 3:
        x = x.unsqueeze(0)
    store = {}

    def as_leaf(t):
        store['feat'] = t.detach().requires_grad_(True)
        return store['feat'].clone()  # a non-leaf copy, so in-place ops after the site are allowed

    with _FrozenParams(net), torch.enable_grad():
        out = _tapped_forward(net, x, module, name, side, as_leaf)
        grad, = torch.autograd.grad(edge_energy(out), store['feat'], allow_unused=True)
    if grad is None:
        raise SiteError(f"csm: the output does not depend on the {side} of '{name}'")
    mag = grad[0].abs()
    top = mag.max()
    saliency = mag / top if top > 0 else torch.zeros_like(mag)
    return saliency.sum(dim=(1, 2)), saliency, store['feat'][0].detach(), out.detach()


# ---------------------------------------------------------------------------------------------
# channel ablation
# ---------------------------------------------------------------------------------------------
def ablation_masks(num_channels, channels=None):
    """``(1 + len(channels), C)`` float masks: row 0 keeps everything (the reference), row k zeroes
    ``channels[k-1]``."""
    channels = range(num_channels) if channels is None else channels
    masks = torch.ones(1 + len(channels), num_channels)
    for row, c in enumerate(channels, start=1):
        masks[row, c] = 0
    return masks


def apply_masks(feat, masks, mode='zero'):
    """Features (1 or M, C, H, W) times masks (M, C) -> (M, C, H, W); ``mode='rescale'`` also scales
    each result by sum|F| / sum of the kept channels' |F| (the paper tool's L1-mass correction)."""
    m = masks.to(device=feat.device, dtype=feat.dtype)
    out = feat * m[:, :, None, None]
    if mode == 'rescale':
        per_channel = feat.abs().sum(dim=(2, 3))  # (1 or M, C)
        total = per_channel.sum(dim=1)
        kept = (per_channel * m).sum(dim=1)
        factor = torch.where(kept > 0, total / torch.where(kept > 0, kept, torch.ones_like(kept)),
                             torch.ones_like(kept))
        out = out * factor[:, None, None, None]
    elif mode != 'zero':
        raise ValueError(f"csm: ablation mode must be 'zero' or 'rescale', got {mode!r}")
    return out


@torch.no_grad()
def ablated_outputs(net, x, site, masks, mode='zero', chunk=8, strategy='auto', progress=None):
    """Run the network once per mask row (in batches of ``chunk``) with the features at ``site``
    multiplied by that row. Yields ``(row index, output (3, H', W'))`` and returns the strategy
    used ('broadcast' or 'repeat') through ``StopIteration.value``; use :func:`run_ablations`."""
    _, name, module, side = _single_site(net, site) if isinstance(site, str) else site
    if x.dim() == 3:
        x = x.unsqueeze(0)
    rows = masks.shape[0]
    k = max(1, min(int(chunk), rows))
    padded = torch.ones(math.ceil(rows / k) * k, masks.shape[1])
    padded[:rows] = masks

    def forward(batch_masks, how):
        if how == 'broadcast':
            return _tapped_forward(net, x, module, name, side, lambda f: apply_masks(f, batch_masks, mode))
        return _tapped_forward(net, x.expand(len(batch_masks), *x.shape[1:]), module, name, side,
                               lambda f: apply_masks(f, batch_masks, mode))

    if strategy == 'auto':  # try the batch-1 trunk on two masks; keep it if it equals repeating the input
        probe = padded[:min(2, len(padded))]
        slow = forward(probe, 'repeat')
        try:
            fast = forward(probe, 'broadcast')
            ok = fast.shape == slow.shape and torch.allclose(fast, slow, rtol=1e-3, atol=1e-3)
        except SiteError:
            raise
        except Exception:  # an op after the site that cannot mix batch sizes (torch.cat, view)
            ok = False
        strategy = 'broadcast' if ok else 'repeat'
    for start in range(0, len(padded), k):
        out = forward(padded[start:start + k], strategy)
        if out.shape[0] != k:
            raise SiteError(f'csm: the network returned a batch of {out.shape[0]} for {k} masks')
        for i in range(k):
            if start + i < rows:
                yield start + i, out[i]
        if progress is not None:  # counts ablated channels (row 0 is the reference)
            progress.update(max(0, min(start + k, rows) - max(start, 1)))
    return strategy


def run_ablations(net, x, site, masks, mode='zero', chunk=8, strategy='auto', progress=None, consume=None):
    """Drive :func:`ablated_outputs`; ``consume(row, output)`` sees each result. Returns the
    strategy that was used."""
    gen = ablated_outputs(net, x, site, masks, mode, chunk, strategy, progress)
    while True:
        try:
            row, out = next(gen)
        except StopIteration as stop:
            return stop.value
        if consume is not None:
            consume(row, out)


def _match_gt(gt, out_img, scale):
    if gt.shape == out_img.shape:
        return gt
    pairs = zip(gt.shape[:2], out_img.shape[:2])
    if gt.ndim == out_img.ndim and all(g >= o and g - o < max(scale, 1) for g, o in pairs):
        return gt[:out_img.shape[0], :out_img.shape[1]]  # a GT that was not mod-cropped
    raise ValueError(f'csm: the GT is {gt.shape[1]}x{gt.shape[0]} but the output is '
                     f'{out_img.shape[1]}x{out_img.shape[0]}; give the GT of this LR image')


def psnr_ceiling(img):
    """PSNR of the smallest change of a uint8 image: one value off by one level."""
    return float(10. * np.log10(255. * 255. * img.size))


def _crop(img, border):
    return img[border:img.shape[0] - border, border:img.shape[1] - border] if border else img


def ablation_psnr(net, x, site, gt=None, mode='zero', chunk=8, crop_border=0, strategy='auto', progress=None,
                  num_channels=None):
    """Channel-ablation PSNR of one image. ``gt``: BGR uint8 HWC (None: compare with the unablated
    output). Returns ``(psnr (C,), reference psnr, strategy used)``."""
    resolved = _single_site(net, site) if isinstance(site, str) else site
    x = x if x.dim() == 4 else x.unsqueeze(0)
    num = num_channels
    if num is None:
        seen = {}

        def peek(t):
            seen['C'] = t.shape[1]
            return t

        with torch.no_grad():
            _tapped_forward(net, x, resolved[2], resolved[1], resolved[3], peek)
        num = seen['C']
    masks = ablation_masks(num)
    psnr = np.zeros(num)
    ref = {}
    scale = None

    def consume(row, out):
        nonlocal scale
        img = tensor2img(out)
        if row == 0:
            scale = img.shape[0] // x.shape[-2]
            ref['target'] = _match_gt(gt, img, scale) if gt is not None else img
            ref['psnr'] = (calculate_psnr(img, ref['target'], crop_border)
                           if gt is not None else psnr_ceiling(_crop(img, crop_border)))
            return
        value = calculate_psnr(img, ref['target'], crop_border)
        psnr[row - 1] = min(value, ref['psnr']) if gt is None else value

    used = run_ablations(net, x, resolved, masks, mode, chunk, strategy, progress, consume)
    return psnr, ref['psnr'], used


# ---------------------------------------------------------------------------------------------
# the whole map over several images
# ---------------------------------------------------------------------------------------------
@dataclass
class ChannelSaliency:
    """Per-channel numbers at one site, averaged over the images (see the module docstring)."""
    site: str
    module: str
    side: str
    mode: str
    has_gt: bool
    image_names: List[str]
    attribution: np.ndarray  # (C,) mean over images of sum_hw |dA/dF| / max|dA/dF|
    ablation_psnr: np.ndarray  # (C,) mean over images
    reference_psnr: float  # mean over images
    per_image_attribution: np.ndarray  # (N, C)
    per_image_psnr: np.ndarray  # (N, C)
    per_image_reference: np.ndarray  # (N,)
    maps: dict = field(default_factory=dict)  # image name -> {'features': (C,H,W), 'saliency': (C,H,W)}
    strategy: str = ''

    @property
    def num_channels(self):
        return int(self.attribution.shape[0])

    @property
    def attribution_share(self):
        total = self.attribution.sum()
        return self.attribution / total if total > 0 else np.full_like(self.attribution, 1. / self.num_channels)

    @property
    def psnr_drop(self):
        return (self.per_image_reference[:, None] - self.per_image_psnr).mean(axis=0)

    def ranking(self, by='attribution'):
        """Channel indices, most important first."""
        values = self.attribution if by == 'attribution' else self.psnr_drop
        return np.argsort(-values, kind='stable')

    def summary(self):
        """Scalars for comparing models: the effective number of channels exp(entropy) of the
        attribution shares and of the positive PSNR drops (C when all channels matter alike, 1 when
        one channel carries everything), and the Spearman rank correlation of the two measures."""
        def effective(weights):
            weights = np.clip(weights, 0, None)
            if weights.sum() <= 0:
                return 0.0
            p = weights / weights.sum()
            p = p[p > 0]
            return float(np.exp(-(p * np.log(p)).sum()))

        return {
            'channels': self.num_channels,
            'images': len(self.image_names),
            'effective_channels_attribution': effective(self.attribution),
            'effective_channels_drop': effective(self.psnr_drop),
            'spearman_attribution_drop': spearman(self.attribution, self.psnr_drop),
            'reference_psnr': float(self.reference_psnr),
            'max_drop': float(self.psnr_drop.max()),
            'mean_drop': float(self.psnr_drop.mean()),
        }


def spearman(a, b):
    """Spearman rank correlation (average ranks for ties); nan if either is constant."""
    def ranks(v):
        v = np.asarray(v, dtype=np.float64)
        order = np.argsort(v, kind='stable')
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=np.float64)
        for value in np.unique(v):  # ties share their mean rank
            tie = v == value
            if tie.sum() > 1:
                r[tie] = r[tie].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float('nan')
    return float(np.corrcoef(ra, rb)[0, 1])


def compute_channel_saliency(net, site, samples, mode='zero', chunk=8, crop_border=0, keep_maps=1,
                             strategy='auto', progress=True, total=None):
    """Channel saliency of ``net`` at one site over ``samples``.

    Args:
        net: the network (put in eval mode here).
        site (str | tuple): a site that resolves to one module, e.g. ``'conv_last:input'``.
        samples: iterable of ``(name, lq, gt)``: ``lq`` an RGB [0, 1] tensor (3, h, w) or (1, 3, h, w),
            ``gt`` a BGR uint8 HWC array or None (then the unablated output is the reference).
            All samples must have a GT or none.
        mode: 'zero' or 'rescale' (see the module docstring). chunk: masks per forward pass.
        crop_border: pixels cropped before PSNR. keep_maps: images whose feature and saliency maps
        are kept (for the heat-map grids). strategy: 'auto', 'broadcast' or 'repeat'.
        progress: show tqdm bars. total: number of samples, for the bar, if ``samples`` has no len.

    Returns:
        ChannelSaliency
    """
    from tqdm import tqdm

    resolved = _single_site(net, site) if isinstance(site, str) else site
    site_str, name, _, side = resolved
    device = next(iter(net.parameters()), torch.empty(0)).device
    net.eval()
    names, attrs, psnrs, refs, maps, has_gt = [], [], [], [], {}, None
    total = total if total is not None else (len(samples) if hasattr(samples, '__len__') else None)
    bar = tqdm(samples, total=total, unit='image', desc=f'CSM {name}:{side}', disable=not progress)
    for sample_name, lq, gt in bar:
        if has_gt is None:
            has_gt = gt is not None
        elif has_gt != (gt is not None):
            raise ValueError(f"csm: image '{sample_name}' {'has no' if has_gt else 'has a'} GT, unlike the first; "
                             'give a GT for every image or for none')
        lq = (lq if lq.dim() == 4 else lq.unsqueeze(0)).to(device)
        attribution, saliency, features, _ = channel_attribution(net, lq, resolved)
        with tqdm(total=attribution.shape[0], unit='channel', desc=f'  ablate {sample_name}', leave=False,
                  disable=not progress) as inner:
            psnr, ref, strategy = ablation_psnr(net, lq, resolved, gt, mode, chunk, crop_border, strategy, inner,
                                                num_channels=attribution.shape[0])
        names.append(str(sample_name))
        attrs.append(attribution.cpu().double().numpy())
        psnrs.append(psnr)
        refs.append(ref)
        if len(maps) < keep_maps:
            maps[str(sample_name)] = {'features': features.cpu().float().numpy(),
                                      'saliency': saliency.cpu().float().numpy()}
    if not names:
        raise ValueError('csm: no image to analyse')
    attrs, psnrs, refs = np.stack(attrs), np.stack(psnrs), np.asarray(refs)
    return ChannelSaliency(site=site_str, module=name, side=side, mode=mode, has_gt=bool(has_gt),
                           image_names=names, attribution=attrs.mean(axis=0), ablation_psnr=psnrs.mean(axis=0),
                           reference_psnr=float(refs.mean()), per_image_attribution=attrs, per_image_psnr=psnrs,
                           per_image_reference=refs, maps=maps, strategy=strategy)


# ---------------------------------------------------------------------------------------------
# drawing (OpenCV, BGR uint8)
# ---------------------------------------------------------------------------------------------
FONT = cv2.FONT_HERSHEY_SIMPLEX
BLACK, GREY, LIGHT, WHITE = (0, 0, 0), (110, 110, 110), (225, 225, 225), (255, 255, 255)
BAR_POS, BAR_NEG = (180, 110, 40), (60, 60, 200)  # blue-ish for positive, red-ish for negative values

# A diverging blue - white - red palette for signed maps (value -1 .. 1), as RGB knots.
_DIVERGING_KNOTS = np.array([[0.10, 0.10, 0.45], [0.20, 0.45, 0.95], [1.0, 1.0, 1.0], [0.95, 0.30, 0.20],
                             [0.50, 0.05, 0.05]])


def diverging_colormap(values):
    """Map values in [-1, 1] to BGR uint8 colours (blue negative, white zero, red positive)."""
    t = (np.clip(np.asarray(values, dtype=np.float64), -1, 1) + 1) / 2 * (len(_DIVERGING_KNOTS) - 1)
    pos = np.linspace(0, len(_DIVERGING_KNOTS) - 1, len(_DIVERGING_KNOTS))
    rgb = np.stack([np.interp(t, pos, _DIVERGING_KNOTS[:, ch]) for ch in range(3)], axis=-1)
    return np.round(rgb[..., ::-1] * 255).astype(np.uint8)


def _text(img, text, org, scale=0.45, color=BLACK, thickness=1):
    cv2.putText(img, str(text), (int(org[0]), int(org[1])), FONT, scale, color, thickness, cv2.LINE_AA)


def _text_width(text, scale=0.45, thickness=1):
    return cv2.getTextSize(str(text), FONT, scale, thickness)[0][0]


def _vertical_text(img, text, center_x, bottom_y, scale=0.4, color=BLACK):
    """Text rotated 90 degrees (reading upwards), its end at ``bottom_y``, centred on ``center_x``."""
    (w, h), base = cv2.getTextSize(str(text), FONT, scale, 1)
    canvas = np.full((h + base + 2, w + 2, 3), 255, np.uint8)
    _text(canvas, text, (1, h + 1), scale, color)
    rot = np.ascontiguousarray(np.rot90(canvas, 1))
    top, left = int(bottom_y) - rot.shape[0], int(center_x) - rot.shape[1] // 2
    t0, l0 = max(top, 0), max(left, 0)
    t1, l1 = min(top + rot.shape[0], img.shape[0]), min(left + rot.shape[1], img.shape[1])
    if t1 > t0 and l1 > l0:
        region = rot[t0 - top:t1 - top, l0 - left:l1 - left]
        dst = img[t0:t1, l0:l1]
        np.copyto(dst, region, where=(region < 250).any(axis=-1, keepdims=True))


def nice_ticks(lo, hi, count=5):
    """Round tick values covering [lo, hi]."""
    lo, hi = float(lo), float(hi)
    if not math.isfinite(lo) or not math.isfinite(hi):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        hi = lo + (abs(lo) if lo else 1.0)
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * (1 - 1e-9))
    start, stop = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [k * step for k in range(start, stop + 1)]


def _fmt(v):
    return f'{v:.3g}' if v != 0 else '0'


BAR_HEIGHT = 440
BAR_MARGINS = (76, 20, 44, 62)  # left, right, top, bottom


def bar_width(num):
    """Pixel width of one bar for ``num`` bars."""
    return int(min(24, max(3, 960 // max(num, 1))))


def bar_chart_size(num):
    """(height, width) of :func:`bar_chart` for ``num`` bars."""
    left, right, _, _ = BAR_MARGINS
    return BAR_HEIGHT, left + right + num * bar_width(num)


def bar_chart(values, labels, title, ylabel, xlabel='channels, sorted', ref_line=None, ref_label=''):
    """A bar chart of ``values`` in the given order, each bar labelled below with ``labels[i]``.
    Returns a BGR uint8 image of :func:`bar_chart_size`."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    num = len(values)
    height, width = bar_chart_size(num)
    left, right, top, bottom = BAR_MARGINS
    img = np.full((height, width, 3), 255, np.uint8)
    lo = min(0.0, values.min() if num else 0.0, ref_line if ref_line is not None else 0.0)
    hi = max(0.0, values.max() if num else 1.0, ref_line if ref_line is not None else 0.0)
    ticks = nice_ticks(lo, hi)
    y_lo, y_hi = ticks[0], ticks[-1]
    plot_top, plot_bottom = top, height - bottom

    def y_of(v):
        return int(round(plot_bottom - (v - y_lo) / (y_hi - y_lo) * (plot_bottom - plot_top)))

    for t in ticks:
        y = y_of(t)
        cv2.line(img, (left, y), (width - right, y), LIGHT, 1)
        label = _fmt(t)
        _text(img, label, (left - 6 - _text_width(label, 0.4), y + 4), 0.4, GREY)
    bw = bar_width(num)
    zero = y_of(0.0)
    for i, v in enumerate(values):
        x0 = left + i * bw
        y = y_of(v)
        gap = 1 if bw > 4 else 0
        cv2.rectangle(img, (x0 + gap, min(y, zero)), (x0 + bw - 1 - gap, max(y, zero)), BAR_POS if v >= 0 else BAR_NEG,
                      -1)
    cv2.line(img, (left, zero), (width - right, zero), BLACK, 1)
    cv2.line(img, (left, plot_top), (left, plot_bottom), BLACK, 1)
    if ref_line is not None:
        y = y_of(ref_line)
        for x in range(left, width - right, 10):
            cv2.line(img, (x, y), (min(x + 5, width - right), y), (40, 150, 40), 1)
        if ref_label:
            _text(img, ref_label, (width - right - _text_width(ref_label, 0.4) - 2, y - 4), 0.4, (40, 150, 40))
    # channel labels below the bars (every k-th one when the bars are narrow)
    every = max(1, math.ceil(12 / bw))
    for i, lab in enumerate(labels):
        if i % every == 0:
            _vertical_text(img, lab, left + i * bw + bw // 2, plot_bottom + 4 + _text_width(lab, 0.35) + 2, 0.35)
    _text(img, title, (left, 26), 0.55, BLACK, 1)
    _text(img, xlabel, (left + (width - left - right - _text_width(xlabel, 0.42)) // 2, height - 8), 0.42, GREY)
    middle = plot_top + (plot_bottom - plot_top) // 2
    _vertical_text(img, ylabel, 14, middle + _text_width(ylabel, 0.42) // 2, 0.42, GREY)
    return img


GRID_PAD, GRID_LABEL, GRID_TITLE, GRID_LEGEND = 6, 16, 30, 34


def grid_layout(num, map_hw, tile=128, columns=8):
    """Layout of :func:`heatmap_grid`: ``(height, width, tile_h, tile_w, columns, rows)``."""
    h, w = map_hw
    s = tile / max(h, w)
    th, tw = max(1, int(round(h * s))), max(1, int(round(w * s)))
    cols = max(1, min(num, columns))
    rows = max(1, math.ceil(num / cols))
    width = max(GRID_PAD + cols * (tw + GRID_PAD), 320)
    height = GRID_TITLE + rows * (GRID_LABEL + th + GRID_PAD) + GRID_LEGEND
    return height, width, th, tw, cols, rows


def heatmap_grid(maps, labels, title, signed=True, tile=128, columns=8, vmax=None):
    """Tiles of 2-D maps (K, H, W) on one shared colour scale: signed maps use [-vmax, vmax]
    (blue - white - red), unsigned ones [0, vmax] (white - red); values beyond are clipped. The
    default vmax is the 99.5th percentile of |maps| (a few peaks would wash the rest out). A
    colour bar is drawn below."""
    maps = np.asarray(maps, dtype=np.float64)
    num = len(maps)
    height, width, th, tw, cols, _ = grid_layout(num, maps.shape[1:], tile, columns)
    img = np.full((height, width, 3), 255, np.uint8)
    vmax = float(np.percentile(np.abs(maps), 99.5)) if vmax is None else float(vmax)
    vmax = vmax if vmax > 0 else 1.0
    interp = cv2.INTER_NEAREST if th >= maps.shape[1] else cv2.INTER_AREA
    for k in range(num):
        r, c = divmod(k, cols)
        x0 = GRID_PAD + c * (tw + GRID_PAD)
        y0 = GRID_TITLE + r * (GRID_LABEL + th + GRID_PAD)
        v = maps[k] / vmax
        colours = diverging_colormap(v if signed else np.clip(v, 0, 1))
        img[y0 + GRID_LABEL:y0 + GRID_LABEL + th, x0:x0 + tw] = cv2.resize(colours, (tw, th), interpolation=interp)
        _text(img, labels[k], (x0 + 1, y0 + GRID_LABEL - 4), 0.38)
    _text(img, title, (GRID_PAD, 20), 0.5)
    # colour bar
    lo_label = _fmt(-vmax) if signed else '0'
    x0 = GRID_PAD + _text_width(lo_label, 0.38) + 8
    bar_w = max(20, min(240, width - x0 - 90))
    y = height - GRID_LEGEND + 8
    ramp = np.linspace(-1 if signed else 0, 1, bar_w)[None, :].repeat(10, axis=0)
    img[y:y + 10, x0:x0 + bar_w] = diverging_colormap(ramp)
    _text(img, lo_label, (x0 - 4 - _text_width(lo_label, 0.38), y + 9), 0.38, GREY)
    _text(img, _fmt(vmax), (x0 + bar_w + 4, y + 9), 0.38, GREY)
    return img


SCATTER_SIZE = (480, 520)  # height, width


def scatter_plot(x, y, labels, title, xlabel, ylabel, annotate=8):
    """Points (x[i], y[i]); the ``annotate`` points largest in x + y ranks are labelled."""
    x, y = (np.nan_to_num(np.asarray(v, dtype=np.float64)) for v in (x, y))
    height, width = SCATTER_SIZE
    left, right, top, bottom = 76, 20, 44, 50
    img = np.full((height, width, 3), 255, np.uint8)
    xt = nice_ticks(min(0.0, x.min()), x.max())
    yt = nice_ticks(min(0.0, y.min()), y.max())

    def px(v):
        return int(round(left + (v - xt[0]) / (xt[-1] - xt[0]) * (width - left - right)))

    def py(v):
        return int(round(height - bottom - (v - yt[0]) / (yt[-1] - yt[0]) * (height - top - bottom)))

    for t in xt:
        cv2.line(img, (px(t), top), (px(t), height - bottom), LIGHT, 1)
        _text(img, _fmt(t), (px(t) - _text_width(_fmt(t), 0.4) // 2, height - bottom + 16), 0.4, GREY)
    for t in yt:
        cv2.line(img, (left, py(t)), (width - right, py(t)), LIGHT, 1)
        _text(img, _fmt(t), (left - 6 - _text_width(_fmt(t), 0.4), py(t) + 4), 0.4, GREY)
    cv2.rectangle(img, (left, top), (width - right, height - bottom), BLACK, 1)
    for xi, yi in zip(x, y):
        cv2.circle(img, (px(xi), py(yi)), 4, BAR_POS, -1, cv2.LINE_AA)
    order = np.argsort(-(np.argsort(np.argsort(x)) + np.argsort(np.argsort(y))), kind='stable')
    for i in order[:annotate]:
        _text(img, labels[i], (px(x[i]) + 5, py(y[i]) - 4), 0.35)
    _text(img, title, (left, 26), 0.55)
    _text(img, xlabel, (left + (width - left - right - _text_width(xlabel, 0.42)) // 2, height - 10), 0.42, GREY)
    _vertical_text(img, ylabel, 14, top + (height - top - bottom) // 2 + _text_width(ylabel, 0.42) // 2, 0.42, GREY)
    return img


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def _safe(name):
    return ''.join(ch if ch.isalnum() or ch in '-_.' else '_' for ch in str(name))


def write_report(result, out_dir, top=16, rank_by='attribution', tile=128):
    """Write the CSVs and PNGs of ``result`` into ``out_dir``; returns ``{kind: path}``."""
    os.makedirs(out_dir, exist_ok=True)
    where = f'{result.module}:{result.side}'
    share, drop = result.attribution_share, result.psnr_drop
    attr_rank = np.empty(result.num_channels, int)
    attr_rank[result.ranking('attribution')] = np.arange(1, result.num_channels + 1)
    drop_rank = np.empty(result.num_channels, int)
    drop_rank[result.ranking('drop')] = np.arange(1, result.num_channels + 1)
    paths = {}

    paths['csv'] = os.path.join(out_dir, 'channels.csv')
    with open(paths['csv'], 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(['channel', 'attribution', 'attribution_share', 'attribution_rank', 'ablation_psnr',
                         'reference_psnr', 'psnr_drop', 'drop_rank'])
        for c in range(result.num_channels):
            writer.writerow([c, f'{result.attribution[c]:.6g}', f'{share[c]:.6g}', attr_rank[c],
                             f'{result.ablation_psnr[c]:.4f}', f'{result.reference_psnr:.4f}', f'{drop[c]:.4f}',
                             drop_rank[c]])
    paths['per_image_csv'] = os.path.join(out_dir, 'per_image.csv')
    with open(paths['per_image_csv'], 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f)
        writer.writerow(['image', 'channel', 'attribution', 'ablation_psnr', 'reference_psnr', 'psnr_drop'])
        for i, name in enumerate(result.image_names):
            ref = result.per_image_reference[i]
            for c in range(result.num_channels):
                writer.writerow([name, c, f'{result.per_image_attribution[i, c]:.6g}',
                                 f'{result.per_image_psnr[i, c]:.4f}', f'{ref:.4f}',
                                 f'{ref - result.per_image_psnr[i, c]:.4f}'])

    against = 'GT' if result.has_gt else 'unablated output'
    order = result.ranking('attribution')
    paths['attribution_png'] = os.path.join(out_dir, 'attribution.png')
    imwrite(bar_chart(share[order], [str(c) for c in order], f'Gradient attribution at {where} '
                      f'({len(result.image_names)} image(s))', 'share of attribution',
                      ref_line=1. / result.num_channels, ref_label='uniform 1/C'), paths['attribution_png'])
    order = result.ranking('drop')
    paths['ablation_png'] = os.path.join(out_dir, 'ablation_drop.png')
    imwrite(bar_chart(drop[order], [str(c) for c in order], f'PSNR drop when one channel at {where} is '
                      f"{'zeroed' if result.mode == 'zero' else 'zeroed (L1 rescaled)'} (vs {against})",
                      'PSNR drop (dB)'), paths['ablation_png'])
    paths['scatter_png'] = os.path.join(out_dir, 'attribution_vs_drop.png')
    imwrite(scatter_plot(share, drop, [str(c) for c in range(result.num_channels)],
                         f"Attribution vs ablation (Spearman {result.summary()['spearman_attribution_drop']:.2f})",
                         'share of attribution', 'PSNR drop (dB)'), paths['scatter_png'])

    chosen = result.ranking(rank_by)[:max(1, int(top))]
    key = 'attr' if rank_by == 'attribution' else 'drop'
    labels = [f'#{r + 1} ch{c} ' + (f'{share[c]:.3f}' if key == 'attr' else f'{drop[c]:.2f}dB')
              for r, c in enumerate(chosen)]
    for name, m in result.maps.items():
        stem = _safe(os.path.splitext(name)[0])
        p = os.path.join(out_dir, f'features_{stem}.png')
        imwrite(heatmap_grid(m['features'][chosen], labels, f'{name}: features at {where}, top {len(chosen)} by '
                             f'{rank_by} (shared scale, clipped at the 99.5th percentile)', signed=True, tile=tile), p)
        paths[f'features_png:{name}'] = p
        p = os.path.join(out_dir, f'saliency_{stem}.png')
        imwrite(heatmap_grid(m['saliency'][chosen], labels, f'{name}: |dA/dF| / max at {where}, top {len(chosen)}',
                             signed=False, tile=tile, vmax=1.0), p)
        paths[f'saliency_png:{name}'] = p
    return paths
