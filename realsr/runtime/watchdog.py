"""A watchdog thread that says where a rank is stuck, and ends a distributed run that a frozen
rank would otherwise hang.

The training loop names its phase (``'data'``, ``'step'``, ``'collective:<name>'``,
``'validation'``, ``'save'``) with :meth:`Watchdog.phase`: two ``time.monotonic()`` calls and a
few attribute writes, no host-device sync. The thread wakes about once a second and

- logs a warning, then again every ``interval`` seconds while it lasts, when the current phase has
  lasted longer than ``interval`` and several times longer than it usually takes (ten intervals
  the first time a phase runs: a first validation or compiled step has no usual duration);
- in a distributed run, when a phase that waits for the other ranks (a collective, the training
  step's gradient all-reduce, the save's barrier) lasts ``dist_params.timeout`` plus a grace
  period (the collective should have raised by then), logs an error naming the option and ends
  the process with :data:`TIMEOUT_EXIT_STATUS`. Data loading and validation are only reported:
  they may legitimately be long, and the collective after them raises on its own.
"""
import contextlib
import logging
import os
import sys
import threading
import time

# Seconds between "still waiting" warnings; tests shorten it.
INTERVAL_ENV = 'REALSR_WATCHDOG_INTERVAL'
DEFAULT_INTERVAL_S = 60.0
TIMEOUT_EXIT_STATUS = 6
# A phase counts as stalled when it lasts this many times its usual (running mean) duration,
# and, the first time a phase runs (a first validation, a first compiled step), this many intervals.
_STALL_FACTOR = 5.0
_FIRST_TIME_INTERVALS = 10


def timeout_message(timeout_s, where):
    """The one line a hang ends with (also used for a collective that raised on its timeout)."""
    return (f'{where} waited longer than dist_params.timeout = {timeout_s:g} s: another rank is frozen, '
            'died or is far behind. Raise dist_params.timeout if a phase (e.g. validation on rank 0, '
            'a first compiled step) legitimately takes longer.')


class CollectiveTimeout(RuntimeError):
    """A collective operation did not complete within ``dist_params.timeout``."""


def is_collective_timeout(err, phase):
    """Whether ``err``, raised in ``phase``, is a collective giving up after the process group's
    timeout (gloo: ``RuntimeError: ... Timed out waiting 5000ms for recv operation to complete``;
    NCCL: ``... collective operation timeout``). Not for data loading, whose own ``timeout`` option
    raises "DataLoader timed out"."""
    import torch.distributed as dist
    text = str(err).lower()
    return (isinstance(err, RuntimeError) and dist.is_available() and dist.is_initialized()
            and phase != 'data' and ('timed out' in text or 'timeout' in text))


def interval_from_env(default=DEFAULT_INTERVAL_S):
    value = os.environ.get(INTERVAL_ENV)
    return float(value) if value else default


class Watchdog:
    """Per-rank stall reporter; use as a context manager around the training loop."""

    def __init__(self, interval=None, timeout=None, rank=0, logger=None, abort=True):
        self.interval = float(interval if interval is not None else interval_from_env())
        self.timeout = timeout  # seconds; None: never abort (one process)
        self.rank = rank
        self.logger = logger or logging.getLogger('realsr')
        self.abort = abort
        self._name = None
        self._since = 0.0
        self._usual = {}  # phase -> running mean duration in seconds
        self._warned_at = 0.0
        self._stop = threading.Event()
        self._thread = None
        self.failed_in = None  # the innermost phase an exception left, for the error message
        self.stalls = []  # (phase, seconds) for every warning given, for tests and the log

    # -- the loop's side -------------------------------------------------------------------------
    @contextlib.contextmanager
    def phase(self, name):
        outer, outer_since = self._name, self._since
        self._name, self._since, self._warned_at = name, time.monotonic(), 0.0
        try:
            yield
        except BaseException:
            if self.failed_in is None:
                self.failed_in = name
            raise
        finally:
            took = time.monotonic() - self._since
            usual = self._usual.get(name)
            self._usual[name] = took if usual is None else 0.9 * usual + 0.1 * took
            self._name, self._since, self._warned_at = outer, outer_since, 0.0

    # -- the thread ------------------------------------------------------------------------------
    def start(self):
        self._thread = threading.Thread(target=self._run, name='realsr-watchdog', daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    @property
    def current(self):
        """The phase the loop is in now (``None`` outside any)."""
        return self._name

    def _run(self):
        poll = min(1.0, self.interval)
        while not self._stop.wait(poll):
            self.check(time.monotonic())

    def check(self, now):
        """One look at the current phase (the thread calls it; tests may call it directly)."""
        name, since = self._name, self._since
        if name is None:
            return
        waited = now - since
        if self.timeout is not None and _waits_for_peers(name) and waited > self.timeout + self.grace():
            self._abort(name, waited)
            return
        usual = self._usual.get(name)
        if usual is None:
            stalled = waited > _FIRST_TIME_INTERVALS * self.interval
        else:
            stalled = waited > self.interval and waited > _STALL_FACTOR * usual
        if stalled and now - (self._warned_at or since) >= self.interval:
            self._warned_at = now
            self.stalls.append((name, waited))
            usual_text = f'usually {usual:.2f} s' if usual is not None else 'the first time'
            # Ranks other than 0 log errors only (logger.py): a stall there is worth one.
            level = logging.WARNING if self.rank == 0 else logging.ERROR
            self.logger.log(level, 'watchdog: rank %d has been in %s for %.0f s (%s).', self.rank,
                            describe_phase(name), waited, usual_text)

    def grace(self):
        """Time past the timeout given to the collective to raise by itself."""
        return min(60.0, max(2.0, 0.2 * self.timeout))

    def _abort(self, name, waited):
        message = timeout_message(self.timeout, f'rank {self.rank}: {describe_phase(name)} ({waited:.0f} s)')
        self.logger.error('watchdog: %s Ending the process.', message)
        print(f'realsr: {message}', file=sys.stderr, flush=True)
        if self.abort:
            for handler in self.logger.handlers:
                with contextlib.suppress(Exception):
                    handler.flush()
            os._exit(TIMEOUT_EXIT_STATUS)  # the main thread is stuck in C++: no clean unwinding possible


def _waits_for_peers(name):
    return name.startswith('collective:') or name in ('step', 'save')


def describe_phase(name):
    if name.startswith('collective:'):
        return f"the collective '{name.split(':', 1)[1]}'"
    return {'data': 'the data loader', 'step': 'the training step', 'validation': 'validation',
            'save': 'saving the checkpoint'}.get(name, f"phase '{name}'")
