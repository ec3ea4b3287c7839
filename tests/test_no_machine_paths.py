"""No tracked file names a path of one particular machine: docs and option files must work from any
checkout (relative paths: ``datasets/``, ``pretrained_models/``, ``../shared/``, ``experiments/``),
and code must not depend on where it was written."""
import re
import subprocess

import pytest

from conftest import REPO_ROOT

# absolute paths that only exist on some machine: home folders, the team's work area, temporary
# folders, mount points, Windows drives
MACHINE_PATH = re.compile(
    r"""(?:^|[\s'"`=(\[,:])("""
    r"""/(?:work|root|scratch|mnt|data\d*|private|var/folders)/[\w.-]+"""
    r"""|/(?:home|Users)/[\w.-]+"""
    r"""|/tmp/[\w.-]+"""
    r"""|[A-Z]:\\{1,2}[\w .-]+\\)""")  # a drive and at least one folder: C:\Users\...

# (file, the path it may name, why)
ALLOWED = {
    ('tests/test_benchmark_grid.py', '/data0/xtkong'):
        "the author's dataset root as written in the Reflash Dropout seed option files; the test checks that "
        'realsr maps it onto datasets/',
}


def _tracked_text_files():
    try:
        out = subprocess.run(['git', 'ls-files', '-z'], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        pytest.skip(f'not a git checkout ({err}): nothing to list')
    for name in filter(None, out.decode().split('\0')):
        path = REPO_ROOT / name
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            yield name, path.read_text(encoding='utf-8')
        except UnicodeDecodeError:  # binary file (image, npz)
            continue


def _allowed(name, found):
    return any(name == file and found.startswith(prefix) for file, prefix in ALLOWED)


def test_no_tracked_file_names_a_machine_path():
    problems = []
    for name, text in _tracked_text_files():
        if name == 'tests/test_no_machine_paths.py':
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            for match in MACHINE_PATH.finditer(line):
                found = match.group(1)
                if not _allowed(name, found):
                    problems.append(f'{name}:{lineno}: {found}')
    assert not problems, 'absolute machine paths (use a relative path such as datasets/, ../shared/ or ' \
                         'pretrained_models/):\n' + '\n'.join(problems)


@pytest.mark.parametrize('text, hit', [
    ('--sets /work/shared/datasets/Set5', '/work/shared'),
    ("dataroot_gt: '/home/alice/DIV2K'", '/home/alice'),
    ('--out /tmp/cmp_run', '/tmp/cmp_run'),
    (r'C:\Users\bob\models', 'C:\\Users'),
    ('path: /data0/xtkong/benchmark', '/data0/xtkong'),
])
def test_the_pattern_catches_machine_paths(text, hit):
    match = MACHINE_PATH.search(text)
    assert match and match.group(1).startswith(hit)


@pytest.mark.parametrize('text', ['datasets/Set5/HR', '../shared/datasets', 'pretrained_models/x.pth',
                                  'experiments/work/models', 'https://host/home/page', 'a/tmp/b'])
def test_the_pattern_leaves_relative_paths_and_urls_alone(text):
    assert MACHINE_PATH.search(text) is None
