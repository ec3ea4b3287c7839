"""Degradation operators for blind super-resolution (Real-ESRGAN's second-order pipeline).

Modules (import the one you need; importing this package loads nothing heavy):

* :mod:`realsr.degradations.kernels` -- numpy blur kernels with BasicSR's names: the bivariate
  Gaussian / generalised Gaussian / plateau kernels, their random samplers,
  ``random_mixed_kernels``, the jinc ``circular_lowpass_kernel``, and
  ``sample_reference_kernels`` (the three per-sample 21x21 kernels Real-ESRGAN's dataset draws).
* :mod:`realsr.degradations.filters` -- ``filter2D``: reflect-padded cross-correlation of a
  (b, c, h, w) batch with one shared kernel or one kernel per sample (grouped convolution).
* :mod:`realsr.degradations.usm` -- unsharp masking: the ``USMSharp`` module (separable 51-tap
  Gaussian) and the numpy/OpenCV twin ``usm_sharp``.
* :mod:`realsr.degradations.jpeg` -- ``DiffJPEG``: batched (optionally differentiable) JPEG
  compression with a per-sample quality, numerically compatible with BasicSR's module.
* :mod:`realsr.degradations.noise` -- Gaussian and Poisson noise, torch (``*_pt``, batched, with an
  optional ``generator``) and numpy versions, plus OpenCV JPEG helpers for numpy images.
* :mod:`realsr.degradations.kernel_synthesis` -- ``KernelSynthesizer``: the same three kernels per
  sample, every choice drawn as tensors and every kernel built in one batched computation on the
  device (no numpy, no per-sample loop).
* :mod:`realsr.degradations.pipeline` -- ``SecondOrderDegradation``: GT batch + generator in, LQ
  batch out, on the GT's device; ``paired_random_crop_batch``.
* :mod:`realsr.degradations.dasr_spaces` -- ``DASRDegradation``: DASR's weak / standard / severe
  spaces (one per batch) and the 33-value normalised degradation-parameter vector it predicts.
* :mod:`realsr.degradations.pair_pool` -- ``TrainingPairPool``: Real-ESRGAN's training-pair queue,
  resumable.
* :mod:`realsr.degradations.testset_protocol` -- the papers' degraded benchmark sets (bicubic,
  blur, noise, JPEG and their combinations), byte-identical to the reference script where it is
  deterministic.
"""

__all__ = ['dasr_spaces', 'filters', 'jpeg', 'kernel_synthesis', 'kernels', 'noise', 'pair_pool', 'pipeline', 'testset_protocol', 'usm']
