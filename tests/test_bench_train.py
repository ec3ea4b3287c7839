"""scripts/bench_train.py at its smallest: one arch, fp32 and bf16, one step, in-process."""
import importlib.util

from conftest import REPO_ROOT


def _load_script():
    spec = importlib.util.spec_from_file_location('bench_train', REPO_ROOT / 'scripts' / 'bench_train.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_train_table_has_the_rows_and_the_ratio(tmp_path):
    bench = _load_script()
    out = tmp_path / 'bench.json'
    lines = []
    rows, table = bench.main(['--device', 'cpu', '--archs', 'MSRResNet', '--settings', 'fp32', 'bf16', '--steps', '1',
                              '--rounds', '1', '--warmup', '1', '--batch', '1', '--lq-size', '8', '--out', str(out)],
                             log=lines.append)
    assert [(r['arch'], r['setting']) for r in rows] == [('MSRResNet', 'fp32'), ('MSRResNet', 'bf16')]
    assert all(r['note'] == '' and r['it_s'] > 0 and r['step_mb'] > 0 for r in rows), rows
    assert rows[0]['vs_fp32'] == 1.0 and rows[1]['vs_fp32'] > 0
    assert rows[1]['fp32_loss'] == rows[0]['loss']  # the same step's loss of fp32, beside bf16's
    header, rule, *body = table.splitlines()
    assert 'x fp32' in header and 'it/s' in header and 'fp32 l_pix' in header
    assert len(body) == 2 and body[0].startswith('| MSRResNet | fp32 | fp32 |') and '| 1.00x |' in body[0]
    assert body[1].startswith('| MSRResNet | bf16 |')
    assert table in lines and out.is_file()
