"""What the data-preparation scripts share: listing images, atomic writes, a process pool with a progress bar.

Used by ``extract_subimages.py``, ``generate_meta_info.py``, ``generate_meta_info_pairdata.py`` and
``generate_multiscale_DF2K.py``; it is not part of the ``realsr`` package.
"""
import functools
import multiprocessing
import os
import sys

try:
    import realsr  # noqa: F401
except ImportError:  # run from a source checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from realsr.data.data_util import IMG_EXTENSIONS, scandir  # noqa: E402
from realsr.utils.atomic_write import write_atomic  # noqa: E402

__all__ = ['PrepError', 'list_images', 'relative_prefix', 'check_name_tokens', 'write_bytes_atomic',
           'write_lines_atomic', 'run_parallel', 'default_n_thread']


class PrepError(ValueError):
    """A problem with the user's input that the scripts report as one clear line (no traceback)."""


def list_images(folder, what='input'):
    """The image files directly inside ``folder`` (names, sorted), skipping hidden files and non-images."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        state = 'is a file, not a folder' if os.path.exists(folder) else 'does not exist'
        raise PrepError(f"The {what} folder '{folder}' {state}.")
    names = [n for n in scandir(folder) if n.lower().endswith(IMG_EXTENSIONS)]
    if not names:
        raise PrepError(f"The {what} folder '{folder}' contains no images (looked for {', '.join(IMG_EXTENSIONS)}).")
    return names


def relative_prefix(folder, root):
    """'sub/folder/' such that root + prefix + name is the image (paths as the meta_info files write them)."""
    rel = os.path.relpath(os.path.abspath(folder), os.path.abspath(root))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise PrepError(f"The folder '{folder}' is not inside its root '{root}'; give as --root the folder the option "
                        "file's dataroot points to.")
    return '' if rel == os.curdir else rel.replace(os.sep, '/') + '/'


def check_name_tokens(names, separator, where):
    """Refuse names that the meta_info readers would split apart (they split lines on ``separator``)."""
    bad = [n for n in names if separator in n]
    if bad:
        shown = ', '.join(repr(n) for n in bad[:5]) + (f' and {len(bad) - 5} more' if len(bad) > 5 else '')
        raise PrepError(f"{len(bad)} path(s) in {where} contain {separator!r}, which the dataset's meta_info reader "
                        f'splits on, so they would be read wrongly: {shown}. Rename them.')


def write_bytes_atomic(path, data):
    """Write ``data`` atomically (realsr's shared writer): a file at its final name is always complete,
    which is what lets the scripts skip outputs that already exist when they are run again."""
    write_atomic(path, data)


def write_lines_atomic(path, lines):
    """Write text lines (each given without its newline) atomically, UTF-8, '\\n' line ends."""
    write_bytes_atomic(path, ''.join(f'{line}\n' for line in lines).encode('utf-8'))


def default_n_thread():
    return max(1, min(20, os.cpu_count() or 1))


def _call_and_tag(worker, index_item):
    index, item = index_item
    return index, worker(item)


def run_parallel(worker, items, n_thread, desc, unit='img', progress=True):
    """``[worker(item) for item in items]`` in a ``multiprocessing.Pool`` of ``n_thread`` processes, with a
    tqdm bar; results keep the order of ``items``. ``n_thread <= 1`` runs in this process (no pickling).

    ``worker`` must be picklable (a module-level function or a ``functools.partial`` of one). The first
    exception a worker raises stops the pool and is raised here.
    """
    from tqdm import tqdm

    items = list(items)
    results = [None] * len(items)
    with tqdm(total=len(items), desc=desc, unit=unit, disable=not progress) as pbar:
        if n_thread <= 1 or len(items) <= 1:
            for i, item in enumerate(items):
                results[i] = worker(item)
                pbar.update(1)
            return results
        # Each worker process decodes and encodes whole images; OpenCV's own threads would only compete.
        with multiprocessing.Pool(min(n_thread, len(items)), initializer=_single_threaded_cv2) as pool:
            tagged = functools.partial(_call_and_tag, worker)
            for i, result in pool.imap_unordered(tagged, enumerate(items)):
                results[i] = result
                pbar.update(1)
    return results


def _single_threaded_cv2():
    import cv2
    cv2.setNumThreads(0)
