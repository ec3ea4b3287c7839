"""Tables, charts and run-to-run differences from realsr/test.py results folders.

    python scripts/benchmark_report.py --results results/A results/B [--names A B] --out report/
        -> report/report.csv, report/report.md, report/chart_<metric>_<degradation>.png
    python scripts/benchmark_report.py --compare results/without_dropout results/with_dropout
        -> prints, per test set and metric, A, B and B - A (and writes compare.csv with --out)

A results folder is results/<name>/ holding metrics_average.csv (or give the CSV itself). The model
is named after the folder unless --names is given. Set names <Set>_<degradation> (the papers' grid,
options/test/benchmark_grid_x4.yml) are split into datasets and degradations. Side-by-side crops of
the saved images: scripts/compare_crops.py (docs/evaluation.md).
"""
import argparse
import os
import sys

try:
    import realsr  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from realsr.benchmark.report import (ReportError, compare_runs, format_comparison, load_run,  # noqa: E402
                                     write_comparison_csv, write_report)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument('--results', nargs='+', metavar='DIR', help='results folders (one per model)')
    p.add_argument('--names', nargs='+', metavar='NAME', help='model names for --results, in order')
    p.add_argument('--out', metavar='DIR', help='output folder for the report (and compare.csv)')
    p.add_argument('--metrics', nargs='+', metavar='METRIC', help='metrics to report (default: all found)')
    p.add_argument('--chart-metrics', nargs='+', metavar='METRIC',
                   help='metrics to chart (default: every reported metric)')
    p.add_argument('--compare', nargs=2, metavar=('A', 'B'), help='two results folders: print B - A per set')
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.results and not args.compare:
        parser.error('give --results DIR [DIR ...] (with --out) and/or --compare A B')
    if args.results and not args.out:
        parser.error('--results needs --out DIR')
    if args.names and (not args.results or len(args.names) != len(args.results)):
        parser.error('--names needs one name per --results folder')
    try:
        if args.results:
            names = args.names or [None] * len(args.results)
            runs = [load_run(path, name) for path, name in zip(args.results, names)]
            out = write_report(runs, args.out, args.metrics, args.chart_metrics)
            print(f"wrote {out['csv']}, {out['md']} and {len(out['charts'])} chart(s) to {args.out}")
        if args.compare:
            cmp = compare_runs(load_run(args.compare[0]), load_run(args.compare[1]), args.metrics)
            print(format_comparison(cmp), end='')
            if args.out:
                os.makedirs(args.out, exist_ok=True)
                print(f"wrote {write_comparison_csv(cmp, os.path.join(args.out, 'compare.csv'))}")
    except ReportError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
