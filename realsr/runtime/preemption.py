"""Graceful stop: SIGTERM/SIGINT (Slurm preemption, ``scancel``, Ctrl-C) or a dead launcher end a
run with a resumable checkpoint instead of losing everything since the last one.

The signal handler only records the request; the training loop finishes its iteration, asks
:meth:`StopRequest.agreed` (all ranks agree, so they save the same iteration), saves and raises
:class:`TrainingStopped`, whose exit status is 128 + the signal number (143 for SIGTERM, 130 for
SIGINT), as a shell reports a process ended by that signal. A second signal ends the process at
once through the default handler.
"""
import datetime
import logging
import os
import signal
import threading

import torch
import torch.distributed as dist

# Ranks agree with an all_reduce(MAX) on the stop as a signal number (0: go on): SIGTERM (15)
# outranks SIGINT (2); a dead launcher counts as SIGTERM (what a launcher sends its ranks).
_HANDLED = (signal.SIGTERM, signal.SIGINT)


class TrainingStopped(SystemExit):
    """The run stopped on request after saving a resumable state; exits with ``128 + signum``."""

    def __init__(self, signum, current_iter):
        self.signum = signum
        self.current_iter = current_iter
        super().__init__(128 + signum)


def launched_by_launcher():
    """True when torchrun / torch.distributed.launch / Slurm started this process (their env)."""
    return any(k in os.environ for k in ('TORCHELASTIC_RUN_ID', 'LOCAL_RANK'))


class StopRequest:
    """Installs the SIGTERM/SIGINT handlers while the training loop runs (a context manager) and
    tells the loop, once per iteration, whether to stop.

    Handlers are installed only in the main thread of the process that entered the block; a
    forked data-loader worker that inherits them ignores the signals (its parent stops it).
    """

    def __init__(self, logger=None, watch_parent=None):
        self.logger = logger or logging.getLogger('realsr')
        self.signum = 0  # the first signal received (0: none)
        self._owner_pid = os.getpid()
        self._previous = {}
        if watch_parent is None:
            watch_parent = launched_by_launcher()
        self._parent_pid = os.getppid() if watch_parent else None
        self._flag = None  # the all_reduce buffer, made once
        self._group = None  # the process group of the flag: None (the default, gloo) or a gloo group under NCCL
        self._announced = False  # local() has logged the stop (written by the main thread only)

    # -- the signal handlers -----------------------------------------------------------------
    def install(self):
        if threading.current_thread() is threading.main_thread():
            for signum in _HANDLED:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def restore(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def __enter__(self):
        return self.install()

    def __exit__(self, *exc):
        self.restore()
        return False

    def _on_signal(self, signum, frame):
        if os.getpid() != self._owner_pid:
            return  # a forked worker: the main process decides
        if self.signum:
            # The second signal: no more waiting. Default action, so the process ends by the signal.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        # No logging here: the handler runs between two bytecodes of the main thread, possibly inside a
        # log handler's write, and a buffered file is not reentrant ("reentrant call inside BufferedWriter").
        # The loop logs the request at its next check (local()). One write only: the handler may run
        # anywhere inside local(), which therefore reads signum once and announces what it returns.
        self.signum = signum

    # -- the per-iteration check ---------------------------------------------------------------
    def _check_parent(self):
        if self._parent_pid is not None and not self.signum and os.getppid() != self._parent_pid:
            self.signum = signal.SIGTERM
            self._announced = True
            self.logger.error('The launcher (pid %d) has exited: stopping as on SIGTERM instead of training '
                              'on alone.', self._parent_pid)

    def local(self):
        """This process's request: the signal number to stop for, or 0. No collective."""
        self._check_parent()
        signum = int(self.signum)  # one read: a signal arriving after it is seen at the next check
        if signum and not self._announced:
            self._announced = True
            self.logger.warning('%s received: finishing this iteration, then saving a resumable state '
                                '(send it again to stop at once, without saving).', signal.Signals(signum).name)
        return signum

    def agreed(self, world_size, timeout_s=None):
        """The stop every rank agrees on (max over ranks of :meth:`local`); one small all_reduce
        when ``world_size > 1`` (a CPU tensor, over gloo even in an NCCL job), none otherwise."""
        value = self.local()
        if world_size <= 1:
            return value
        if self._flag is None:  # made once, by every rank at the same iteration (new_group is collective)
            # A CPU tensor over gloo: with NCCL, a device flag read by .item() would wait for the GPU to
            # finish the step every iteration and end the CPU's run-ahead. Under an NCCL job the flag goes
            # through a small gloo group of its own, so the check never touches the device.
            timeout = None if timeout_s is None else datetime.timedelta(seconds=timeout_s)
            self._group = dist.new_group(backend='gloo', timeout=timeout) if dist.get_backend() != 'gloo' else None
            self._flag = torch.zeros((), dtype=torch.int32)
        self._flag.fill_(value)
        dist.all_reduce(self._flag, op=dist.ReduceOp.MAX, group=self._group)
        return int(self._flag.item())  # a CPU tensor: no device sync
