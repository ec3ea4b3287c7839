"""Storage backends that return the raw bytes of a file: local disk or lmdb (BasicSR-compatible).

``FileClient(backend, **kwargs).get(filepath_or_key, client_key='default')`` returns bytes.

The lmdb backend opens its environments lazily, on the first ``get`` in the process that calls
it, shares them between the backends of that process and reopens them after a fork. It can
therefore be pickled into DataLoader worker processes (fork or spawn): open environments are
never carried across.
"""
import abc
import os

from realsr import option_defs as defs

__all__ = ['BaseStorageBackend', 'HardDiskBackend', 'LmdbBackend', 'FileClient', 'close_lmdb_env',
           'io_backend_options']


def io_backend_options(dataset_opt):
    """A copy of a dataset's ``io_backend`` with its ``type`` filled in (defined default: disk)."""
    io_opt = dict(dataset_opt.get('io_backend') or {})
    io_opt['type'] = defs.value(io_opt, defs.IO_BACKEND, 'type')
    return io_opt


class BaseStorageBackend(abc.ABC):
    """Interface: ``get`` returns bytes, ``get_text`` returns str."""

    @abc.abstractmethod
    def get(self, filepath):
        """The file's bytes."""

    @abc.abstractmethod
    def get_text(self, filepath):
        """The file's text."""


class HardDiskBackend(BaseStorageBackend):
    """Read files from a local (or mounted) file system."""

    def get(self, filepath):
        filepath = os.fspath(filepath)
        try:
            with open(filepath, 'rb') as f:
                return f.read()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"Image file not found: '{filepath}'. Check the dataset paths in the options "
                '(dataroot_gt / dataroot_lq / meta_info_file) and that the file was not moved or deleted.') from None
        except IsADirectoryError:
            raise IsADirectoryError(f"Expected an image file but found a folder: '{filepath}'.") from None
        except OSError as err:
            raise OSError(f"Cannot read image file '{filepath}': {err.strerror or err}") from err

    def get_text(self, filepath):
        filepath = os.fspath(filepath)
        try:
            with open(filepath, 'r', encoding='utf-8') as f:
                return f.read()
        except OSError as err:
            raise type(err)(f"Cannot read text file '{filepath}': {err.strerror or err}") from err


# Open lmdb environments, shared by every LmdbBackend of this process: py-lmdb refuses to open
# the same database twice in one process (e.g. a train and a val dataset on one database).
_ENVS = {}
_ENVS_PID = None


def _shared_env(path, open_kwargs):
    """The process's environment for ``path``, opened on first use (after a fork, reopened)."""
    global _ENVS_PID
    pid = os.getpid()
    if _ENVS_PID != pid:
        # A forked child (e.g. a DataLoader worker) must not use its parent's handles; closing the
        # inherited copies only affects this process and lets it open the databases again.
        for env in _ENVS.values():
            try:
                env.close()
            except Exception:  # noqa: BLE001 - nothing useful to do about a broken inherited handle
                pass
        _ENVS.clear()
        _ENVS_PID = pid
    real = os.path.realpath(path)
    env = _ENVS.get(real)
    if env is None:
        import lmdb  # imported here so that disk-only users do not need it loaded
        try:
            env = lmdb.open(path, **open_kwargs)
        except lmdb.Error as err:
            raise OSError(f"Cannot open lmdb database '{path}': {err}") from err
        _ENVS[real] = env
    return env


def close_lmdb_env(path=None):
    """Close this process's open environment for ``path`` (all of them if None)."""
    if _ENVS_PID != os.getpid():
        return
    reals = list(_ENVS) if path is None else [os.path.realpath(path)]
    for real in reals:
        env = _ENVS.pop(real, None)
        if env is not None:
            env.close()


class LmdbBackend(BaseStorageBackend):
    """Read values from one or more lmdb databases (the format BasicSR's create_lmdb writes).

    Args:
        db_paths (str | list[str]): lmdb folders.
        client_keys (str | list[str]): one name per database, used as ``get(key, client_key)``.
        readonly, lock, readahead: passed to ``lmdb.open`` (defaults: ``io_backend``'s definitions,
            True, False, False).
        **kwargs: further ``lmdb.open`` arguments.

    The environments are opened on the first ``get`` of each process and shared by the backends
    of that process; the backend itself holds none, so it pickles into worker processes.
    """

    def __init__(self, db_paths, client_keys='default', readonly=defs.default(defs.IO_BACKEND, 'readonly'),
                 lock=defs.default(defs.IO_BACKEND, 'lock'), readahead=defs.default(defs.IO_BACKEND, 'readahead'),
                 **kwargs):
        if isinstance(db_paths, (str, os.PathLike)):
            db_paths = [db_paths]
        if isinstance(client_keys, str):
            client_keys = [client_keys]
        db_paths = [os.fspath(p) for p in db_paths]
        client_keys = list(client_keys)
        if len(db_paths) != len(client_keys):
            raise ValueError(f'LmdbBackend: db_paths and client_keys must have the same length, got '
                             f'{len(db_paths)} paths {db_paths} and {len(client_keys)} keys {client_keys}.')
        if len(set(client_keys)) != len(client_keys):
            raise ValueError(f'LmdbBackend: client_keys must be unique, got {client_keys}.')
        self.db_paths = dict(zip(client_keys, db_paths))
        self._open_kwargs = dict(readonly=readonly, lock=lock, readahead=readahead, **kwargs)

    def _env(self, client_key):
        if client_key not in self.db_paths:
            raise KeyError(f"LmdbBackend: unknown client_key {client_key!r}; this backend has "
                           f"{sorted(self.db_paths)} (for {list(self.db_paths.values())}).")
        path = self.db_paths[client_key]
        if not os.path.isfile(os.path.join(path, 'data.mdb')):
            raise FileNotFoundError(f"lmdb database not found: '{path}' (client_key {client_key!r}) has no "
                                    'data.mdb; make it with scripts/create_lmdb.py.')
        return _shared_env(path, self._open_kwargs)

    def get(self, filepath, client_key='default'):
        key = os.fspath(filepath) if isinstance(filepath, os.PathLike) else str(filepath)
        env = self._env(client_key)
        with env.begin(write=False) as txn:
            value = txn.get(key.encode('utf-8'))
        if value is None:
            raise KeyError(f"Key {key!r} not found in lmdb database '{self.db_paths[client_key]}' "
                           f'(client_key {client_key!r}). Check that meta_info.txt matches the database '
                           '(re-create it with scripts/create_lmdb.py if needed).')
        return value

    def get_text(self, filepath, client_key='default'):
        return self.get(filepath, client_key).decode('utf-8')


class FileClient:
    """A uniform front end for the storage backends.

    Args:
        backend (str): 'disk' or 'lmdb'.
        **kwargs: passed to the backend (for lmdb: db_paths, client_keys, readonly, lock, readahead).
    """

    _backends = {
        'disk': HardDiskBackend,
        'lmdb': LmdbBackend,
    }

    def __init__(self, backend='disk', **kwargs):
        if backend == 'memcached':
            raise ValueError("io_backend type 'memcached' is not supported by realsr (the memcached client it "
                             "needs is unmaintained). Use 'disk', or convert the images with "
                             "scripts/create_lmdb.py and use 'lmdb'.")
        if backend not in self._backends:
            raise ValueError(f'Unknown io_backend type {backend!r}; supported: {", ".join(self._backends)}.')
        self.backend = backend
        self.client = self._backends[backend](**kwargs)

    @classmethod
    def from_options(cls, io_opt):
        """The client of an ``io_backend`` option dict (see :func:`io_backend_options`)."""
        kwargs = dict(io_opt)
        return cls(kwargs.pop('type'), **kwargs)

    def get(self, filepath, client_key='default'):
        # Only the lmdb backend holds several databases, named by client_key.
        if self.backend == 'lmdb':
            return self.client.get(filepath, client_key)
        return self.client.get(filepath)

    def get_text(self, filepath, client_key='default'):
        if self.backend == 'lmdb':
            return self.client.get_text(filepath, client_key)
        return self.client.get_text(filepath)
