"""Export a trained network to ONNX: ``python realsr/export.py --model <pth> -o out.onnx`` (or
``realsr-export``). See :mod:`realsr.engine.export`.
"""
import os
import sys

if __package__ in (None, ''):  # run as a script: make `import realsr` find this checkout
    _here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0]) == _here:
        sys.path.pop(0)
    sys.path.insert(0, os.path.dirname(_here))

from realsr.engine.export import main  # noqa: E402

if __name__ == '__main__':
    main()
