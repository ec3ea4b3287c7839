"""The training-pair pool of Real-ESRGAN (``queue_size``, default 180).

Batched degradation shares some draws across a batch (one resize factor, one noise type), so
Real-ESRGAN mixes pairs synthesised in different batches: while the pool fills, each batch is
stored and used as it is; once full, the whole pool is shuffled, the first ``b`` pairs are
trained on and the new batch takes their places.

Differences from the reference, both deliberate:
* the size is rounded down to a multiple of the batch size (the reference asserts that it
  divides; Real-ESRGAN issue #151) and the rounding is logged;
* the pool is part of the training state (``state_dict``), so a resumed run continues with
  the same pool instead of an empty one.
It holds any number of aligned tensors (lq, gt, and e.g. the degradation parameters a later
model predicts), so they always stay paired through the shuffle.
"""
import logging

import torch

logger = logging.getLogger('realsr')


class TrainingPairPool:

    def __init__(self, queue_size, batch_size):
        if batch_size <= 0:
            raise ValueError(f'batch size must be positive, got {batch_size}')
        size = (int(queue_size) // batch_size) * batch_size
        if size == 0 and queue_size > 0:
            size = batch_size
        if size != queue_size:
            logger.info('queue_size %d is not a multiple of the batch size %d: using a pool of %d pairs.',
                        queue_size, batch_size, size)
        self.size = size
        self.batch_size = batch_size
        self.pool = None  # dict name -> (size, ...) tensor, allocated on first use
        self.ptr = 0

    @property
    def enabled(self):
        return self.size > 0

    def __call__(self, batch, generator=None):
        """``batch``: dict of tensors with the same first dimension ``b``. Returns the dict
        to train on."""
        if not self.enabled:
            return batch
        b = next(iter(batch.values())).size(0)
        if b != self.batch_size:
            raise ValueError(f'the pool was made for batches of {self.batch_size}, got {b}')
        if self.pool is None:
            self.pool = {k: v.new_zeros((self.size, ) + tuple(v.shape[1:])) for k, v in batch.items()}
        if self.ptr < self.size:  # still filling: keep a copy, train on the batch as it is
            for k, v in batch.items():
                self.pool[k][self.ptr:self.ptr + b] = v.detach()
            self.ptr += b
            return batch
        device = next(iter(self.pool.values())).device
        perm = torch.randperm(self.size, generator=generator, device=generator.device if generator is not None
                              else device).to(device)
        out = {}
        for k, v in batch.items():
            shuffled = self.pool[k][perm]
            out[k] = shuffled[:b].clone()
            shuffled[:b] = v.detach()
            self.pool[k] = shuffled
        return out

    def state_dict(self):
        return {'size': self.size, 'ptr': self.ptr,
                'pool': None if self.pool is None else {k: v.cpu() for k, v in self.pool.items()}}

    def load_state_dict(self, state, device=None):
        if state['size'] != self.size:
            logger.warning('The saved pool holds %d pairs, this run uses %d: starting with an empty pool.',
                           state['size'], self.size)
            return
        self.ptr = state['ptr']
        self.pool = None if state['pool'] is None else {k: v.to(device) for k, v in state['pool'].items()}
