"""docs/reliability.md names, for each fault, the test that shows it: every file and test it names exists."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_every_test_named_in_reliability_md_exists():
    text = (REPO / 'docs' / 'reliability.md').read_text(encoding='utf-8')
    current, missing, named = None, [], 0
    # `test_x.py::test_y` names a file and a test; a following `::test_z` names another test of the same file
    for match in re.finditer(r'`(test_[a-z0-9_]+\.py)(?:::([A-Za-z0-9_*]+))?`|`::([A-Za-z0-9_*]+)`', text):
        file_name, test_name = match.group(1), match.group(2) or match.group(3)
        current = file_name or current
        assert current is not None, f'{match.group(0)} follows no test file'
        path = REPO / 'tests' / current
        if not path.exists():
            missing.append(current)
            continue
        if test_name:
            named += 1
            if not re.search(rf'def {test_name.replace("*", "[A-Za-z0-9_]*")}\(', path.read_text(encoding='utf-8')):
                missing.append(f'{current}::{test_name}')
    assert named > 30 and not missing, missing
