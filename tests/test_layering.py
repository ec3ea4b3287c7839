"""The package's layers (docs/framework.md, "Layers"): an import may only point to the same or a
lower layer. Checked statically over every module's `import` statements, including imports inside
functions, because a lazy upward import is still an upward dependency."""
import ast
import os

import realsr

# Bottom to top. A top-level package or module of realsr belongs to exactly one layer.
LAYERS = [
    {'version', 'registry', 'utils', 'compat', 'option_defs'},  # compat: name-based switches of other
    # projects' files; option_defs: every option's definition and default, read by every layer above
    {'regularizers', 'degradations', 'metrics'},  # pure building blocks
    {'archs', 'analysis', 'benchmark'},  # archs host regularizer sites; benchmark = grid definitions
    {'losses'},  # perceptual losses build VGG from archs
    {'data'},
    {'runtime'},  # run utilities that models use
    {'models'},  # what one training step computes
    {'option_schema', 'options', 'option_tool'},  # option files -> validated options for every layer below
    {'engine'},  # the loop, validation, the tester and inference
    {'train', 'test', 'infer', 'export'},  # command-line entry points
]

# Upward edges that still exist, each with the work that removes it. The test fails when an edge
# here disappears too (so the list cannot go stale) and when any other upward edge appears.
KNOWN_UPWARD = {
}

PACKAGE_DIR = os.path.dirname(realsr.__file__)


def _layer_of(name):
    for index, layer in enumerate(LAYERS):
        if name in layer:
            return index
    raise AssertionError(f'realsr.{name} is in no layer of tests/test_layering.py; add it to LAYERS')


def _unit(path):
    rel = os.path.relpath(path, PACKAGE_DIR)
    first = rel.split(os.sep)[0]
    return first[:-3] if first.endswith('.py') else first


def _imported_units(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f'{node.module}.{alias.name}' for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split('.')
            if parts[0] == 'realsr' and len(parts) > 1:
                yield parts[1], node.lineno


def _upward_edges():
    edges = {}
    for dirpath, _, filenames in os.walk(PACKAGE_DIR):
        for filename in filenames:
            if not filename.endswith('.py'):
                continue
            path = os.path.join(dirpath, filename)
            source = _unit(path)
            if source == '__init__':
                continue
            with open(path, encoding='utf-8') as f:
                tree = ast.parse(f.read(), path)
            for target, lineno in _imported_units(tree):
                if target == source or not os.path.exists(os.path.join(PACKAGE_DIR, target)) and \
                        not os.path.exists(os.path.join(PACKAGE_DIR, target + '.py')):
                    continue
                if _layer_of(target) > _layer_of(source):
                    rel = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))
                    where = edges.setdefault((source, target), [])
                    if f'{rel}:{lineno}' not in where:
                        where.append(f'{rel}:{lineno}')
    return edges


def test_every_unit_has_a_layer():
    for entry in os.listdir(PACKAGE_DIR):
        if entry.startswith(('_', '.')) or entry.endswith(('.npz', '.pyc')):
            continue
        if entry.endswith('.py') or os.path.isdir(os.path.join(PACKAGE_DIR, entry)):
            _layer_of(entry[:-3] if entry.endswith('.py') else entry)


def test_imports_only_point_down():
    edges = _upward_edges()
    unexpected = {edge: where for edge, where in edges.items() if edge not in KNOWN_UPWARD}
    assert not unexpected, 'upward imports (a lower layer importing a higher one): ' + '; '.join(
        f'{src} -> {dst} at {", ".join(where)}' for (src, dst), where in sorted(unexpected.items()))
    gone = set(KNOWN_UPWARD) - set(edges)
    assert not gone, f'remove these fixed edges from KNOWN_UPWARD: {sorted(gone)}'
