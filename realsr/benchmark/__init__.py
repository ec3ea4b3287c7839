"""Benchmarks as the papers run them.

``grid``: the ``datasets_grid`` option form (datasets x degradations with path templates) that
expands into BasicSR ``test_*`` dataset blocks; :func:`realsr.options.parse_options` calls it.
``report``: tables (CSV, Markdown), grouped bar charts and run-to-run differences from the
``metrics_average.csv`` files that ``realsr/test.py`` writes (``scripts/benchmark_report.py``).
``crops``: side-by-side crops of several runs' saved outputs with the GT (``scripts/compare_crops.py``).
See docs/evaluation.md.
Import the submodules directly; this package imports nothing on its own.
"""
