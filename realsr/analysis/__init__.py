"""Analysis tools for trained networks (nothing here is needed for training or testing).

``channel_saliency``: the channel saliency map (per-channel gradient attribution and
channel-ablation PSNR at a named site), used by ``scripts/csm.py``. Import the submodule
directly; this package imports nothing on its own.
"""
