"""The ``datasets_grid`` option form: datasets x degradations from one short block.

A test option file may hold, beside (or instead of) ``datasets:``, a top-level block::

    datasets_grid:
      datasets: [Set5, Set14, {name: BSD100, folder: B100}, Manga109, Urban100]
      degradations: all            # or a list of the papers' folder names
      dataroot_gt: datasets/{folder}/HR
      dataroot_lq: datasets/{folder}/LR_degra/{degradation}
      # name: '{dataset}_{degradation}'   (default)
      # type: PairedImageDataset          (default)
      # io_backend: {type: disk}          (default)
      # order: degradation                (default: for each degradation, every dataset, as the
      #                                    papers' files; 'dataset' nests the other way)
      # any other key (filename_tmpl, num_worker_per_gpu, ...) is copied into every block as is

It expands, before validation, into ``datasets: {test_01: {name: Set5_bicubic, ...}, ...}`` -- the
papers' 40 blocks for five datasets and the eight degradations. Template fields, usable in
``name``, ``dataroot_*`` and ``meta_info*``: ``{dataset}`` (the set's name), ``{folder}`` (its
folder, the name unless given), ``{degradation}`` and ``{scale}``. ``filename_tmpl`` is BasicSR's own
``'{}x4'`` template and is never formatted. A list of such mappings makes several grids (e.g. one
for an extra set with another layout). Explicit ``datasets:`` entries are kept; grid keys are
numbered after the highest explicit ``<prefix>_<n>``.
"""
import copy
import difflib
import string

from realsr.degradations.testset_variants import VARIANTS  # not testset_protocol: it loads OpenCV
from realsr.utils.option_error import OptionError

GRID_KEY = 'datasets_grid'
TEMPLATE_FIELDS = ('dataset', 'folder', 'degradation', 'scale')
DEFAULT_NAME = '{dataset}_{degradation}'
ORDERS = ('degradation', 'dataset')
PREFIXES = ('test', 'val')
# grid keys that shape the expansion; every other key is copied into the dataset blocks
_CONTROL_KEYS = ('datasets', 'degradations', 'order', 'key_prefix')


def _templated(key):
    return key == 'name' or str(key).startswith('dataroot') or str(key).startswith('meta_info')


def _fields(template):
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def _dataset_entries(value, path, problems):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        problems.append(f"'{path}' must be a non-empty list of dataset names (or {{name: .., folder: ..}}), "
                        f"got {value!r}")
        return []
    entries = []
    for i, item in enumerate(value):
        if isinstance(item, (str, int)) and not isinstance(item, bool):
            entries.append((str(item), str(item)))
        elif isinstance(item, dict) and 'name' in item and set(item) <= {'name', 'folder'}:
            entries.append((str(item['name']), str(item.get('folder') or item['name'])))
        else:
            problems.append(f"'{path}[{i}]' must be a name or a mapping {{name: BSD100, folder: B100}}, got {item!r}")
    names = [n for n, _ in entries]
    for n in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"'{path}' lists '{n}' more than once")
    return entries


def _degradations(value, path, problems):
    if value in ('all', None):
        return list(VARIANTS)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        problems.append(f"'{path}' must be 'all' or a list of: {', '.join(VARIANTS)}; got {value!r}")
        return []
    out = []
    for i, d in enumerate(value):
        if d not in VARIANTS:
            close = difflib.get_close_matches(str(d), VARIANTS, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ''
            problems.append(f"'{path}[{i}]': unknown degradation {d!r}; {hint}valid: {', '.join(VARIANTS)}")
        elif d in out:
            problems.append(f"'{path}' lists '{d}' more than once")
        else:
            out.append(d)
    return out


def expand_grid(grid, scale=None, path=GRID_KEY, dataset_keys=None):
    """One grid mapping -> ``(prefix, [dataset block, ...])`` in the grid's order. ``dataset_keys``:
    a function from a dataset type to the keys its blocks may hold (None: unknown), so a key no
    block could take is reported once. Raises :class:`OptionError` naming every problem."""
    problems = []
    if not isinstance(grid, dict):
        raise OptionError([f"'{path}' must be a mapping (datasets, degradations, dataroot_gt, dataroot_lq, ...)"])
    for key in ('datasets', 'degradations', 'dataroot_lq'):
        if key not in grid:
            problems.append(f"'{path}' is missing '{key}'")
    sets = _dataset_entries(grid.get('datasets'), f'{path}.datasets', problems) if 'datasets' in grid else []
    degs = _degradations(grid.get('degradations'), f'{path}.degradations', problems) if 'degradations' in grid else []
    order = grid.get('order', 'degradation')
    if order not in ORDERS:
        problems.append(f"'{path}.order' must be one of {', '.join(ORDERS)}, got {order!r}")
    prefix = grid.get('key_prefix', 'test')
    if prefix not in PREFIXES:
        problems.append(f"'{path}.key_prefix' must be one of {', '.join(PREFIXES)}, got {prefix!r}")
    template = {k: v for k, v in grid.items() if k not in _CONTROL_KEYS}
    template.setdefault('name', DEFAULT_NAME)
    template.setdefault('type', 'PairedImageDataset')
    template.setdefault('io_backend', {'type': 'disk'})
    known = dataset_keys(template['type']) if dataset_keys is not None else None
    if known is not None:  # a key no block could take is reported once, here, not once per block
        for key in template:
            if key not in known:
                close = difflib.get_close_matches(str(key), sorted(known) + list(_CONTROL_KEYS), n=1, cutoff=0.6)
                hint = f"; did you mean '{close[0]}'?" if close else ''
                problems.append(f"unknown key '{path}.{key}' for {template['type']}{hint}")
    for key, value in template.items():
        if _templated(key) and isinstance(value, str):
            try:
                unknown = [f for f in _fields(value) if f not in TEMPLATE_FIELDS]
            except ValueError as err:  # unbalanced braces
                problems.append(f"'{path}.{key}': bad template {value!r} ({err})")
                continue
            if unknown:
                problems.append(f"'{path}.{key}': unknown template field(s) "
                                f"{', '.join('{' + f + '}' for f in unknown)} in {value!r}; "
                                f"valid: {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}")
            elif 'scale' in _fields(value) and scale is None:
                problems.append(f"'{path}.{key}' uses {{scale}} but the file has no top-level 'scale'")
    if problems:
        raise OptionError(problems)
    pairs = ([(s, d) for d in degs for s in sets] if order == 'degradation' else [(s, d) for s in sets for d in degs])
    blocks = []
    for (name, folder), deg in pairs:
        fields = {'dataset': name, 'folder': folder, 'degradation': deg, 'scale': scale}
        blocks.append({k: (v.format(**fields) if _templated(k) and isinstance(v, str) else copy.deepcopy(v))
                       for k, v in template.items()})
    return prefix, blocks


def _index(key, prefix):
    head, _, tail = str(key).partition('_')
    return int(tail) if head == prefix and tail.isdigit() else None


def expand_dataset_grid(opt, source=None, dataset_keys=None):
    """Replace ``opt['datasets_grid']`` (a mapping or a list of them) with numbered blocks in
    ``opt['datasets']``; a no-op without it. Returns ``opt``; problems raise :class:`OptionError`
    (``source``: the option file, named in the message; ``dataset_keys``: see :func:`expand_grid`)."""
    if GRID_KEY not in opt:
        return opt
    grids = opt.pop(GRID_KEY)
    if grids is None:
        return opt
    if isinstance(grids, dict):
        grids = [(GRID_KEY, grids)]
    elif isinstance(grids, list):
        grids = [(f'{GRID_KEY}[{i}]', g) for i, g in enumerate(grids)]
    else:
        raise OptionError([f"'{GRID_KEY}' must be a mapping or a list of mappings, got {grids!r}"], source)
    if opt.get('datasets') is None:
        opt['datasets'] = {}
    datasets = opt['datasets']
    if not isinstance(datasets, dict):
        raise OptionError([f"'datasets' must be a mapping to be combined with '{GRID_KEY}'"], source)
    problems, expanded = [], []
    for path, grid in grids:
        try:
            expanded.append(expand_grid(grid, opt.get('scale'), path, dataset_keys))
        except OptionError as err:
            problems += err.problems
    if problems:
        raise OptionError(problems, source)
    names = {str(ds.get('name')): key for key, ds in datasets.items() if isinstance(ds, dict)}
    for prefix in PREFIXES:
        blocks = [b for p, bs in expanded if p == prefix for b in bs]
        if not blocks:
            continue
        start = max([i for i in (_index(k, prefix) for k in datasets) if i is not None], default=0) + 1
        width = max(2, len(str(start + len(blocks) - 1)))
        for i, block in enumerate(blocks):
            key = f'{prefix}_{start + i:0{width}d}'
            if block['name'] in names:
                problems.append(f"'{GRID_KEY}' makes a second test set named '{block['name']}' "
                                f"(already 'datasets.{names[block['name']]}'); set names must be unique")
                continue
            names[block['name']] = key
            datasets[key] = block
    if problems:
        raise OptionError(problems, source)
    return opt
