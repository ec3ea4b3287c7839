"""Atomic small-file writes: a hidden temporary file in the same folder, then ``os.replace``, so a
reader (or a re-run after a kill) sees the old file or the new one, never half of one.

Checkpoints use :func:`realsr.runtime.checkpoint.atomic_save` (fsync, retries, disk-full message) and
images :func:`realsr.utils.img_util.imwrite`; this is for the text and byte files around them
(option-file copies, result tables, meta_info lists, schemas)."""
import logging
import os
import uuid


def write_atomic(path, data):
    """Write ``data`` (``bytes``, or ``str`` written as UTF-8 with ``\\n`` line ends) to ``path``.
    The folder is created if needed; on any error the temporary file is removed and the old file
    is left as it was. A failed removal is logged, never raised over the original error."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f'.{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp')
    payload = data.encode('utf-8') if isinstance(data, str) else data
    try:
        with open(tmp, 'wb') as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        try:
            if os.path.exists(tmp):
                os.remove(tmp)
        except OSError as cleanup:
            logging.getLogger('realsr').warning('Could not remove the temporary file %s: %s', tmp, cleanup)
        raise
