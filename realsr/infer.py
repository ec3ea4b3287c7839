"""Upscale your own images: ``python realsr/infer.py -i <file-or-dir> -o <dir> --opt <test yml>``
or ``... --arch <name> --model <pth>`` (or ``realsr-infer``). See :mod:`realsr.engine.inference`.
"""
import os
import sys

if __package__ in (None, ''):  # run as a script: make `import realsr` find this checkout
    _here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0]) == _here:
        sys.path.pop(0)
    sys.path.insert(0, os.path.dirname(_here))

from realsr.engine.inference import main  # noqa: E402

if __name__ == '__main__':
    main()
