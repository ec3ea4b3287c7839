"""scripts/gpu_check.sh is what proves the CUDA paths the first time a session has a GPU; its CPU
dry run (REALSR_GPU_CHECK_DEVICE=cpu) keeps it runnable in CI, so an option or API change that would
break it on the GPU machine breaks here first. Reduced to two modes to keep it short."""
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT


@pytest.mark.slow
def test_gpu_check_dry_run_on_the_cpu_passes():
    env = dict(os.environ, REALSR_GPU_CHECK_DEVICE='cpu', REALSR_GPU_CHECK_MODES='fp32 cl', PYTHON=sys.executable,
               OMP_NUM_THREADS='2')
    proc = subprocess.run(['bash', str(REPO_ROOT / 'scripts' / 'gpu_check.sh')], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    failed = [line for line in out.splitlines() if ' FAIL ' in line]
    assert proc.returncode == 0 and not failed, '\n'.join(failed) or out[-3000:]
    for check in ('train SRModel/fp32', 'train RealESRNetModel/cl', 'ddp torchrun x1 (gloo)', 'sdpa kernels'):
        assert any(line.startswith(check) and ' PASS ' in line for line in out.splitlines()), (check, out[-3000:])
