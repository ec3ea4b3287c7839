"""Registries: BasicSR's decorator and lookup semantics, lazy built-ins, a light ``import realsr``.

spec/basicsr-compat.md B.3: ``@X.register()`` or ``X.register(obj)`` under ``obj.__name__`` (plus
``_suffix``), a duplicate name is an AssertionError, ``get(name)`` falls back to ``name_basicsr``,
``in``/iteration/``keys()``. Unlike BasicSR, a broken module removes only its own names.
"""
import os
import subprocess
import sys
import textwrap
import uuid

import pytest
import torch
from torch import nn

import realsr.registry as registry_module
from realsr.archs import build_network
from realsr.registry import (ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY,
                             Registry)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# A user's own arch: one decorator, nothing else.
@ARCH_REGISTRY.register()
class UserTinyTestNet(nn.Module):

    def __init__(self, num_in_ch=3, num_out_ch=3, num_feat=4, upscale=2):
        super().__init__()
        self.body = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.tail = nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1)
        self.up = nn.PixelShuffle(upscale)

    def forward(self, x):
        return self.up(self.tail(torch.relu(self.body(x))))


# ---------------------------------------------------------------------------------------------
# decorator and lookup semantics
# ---------------------------------------------------------------------------------------------
def test_register_with_decorator_and_by_call():
    reg = Registry('thing')

    @reg.register()
    class MyArchA:
        pass

    def my_function():
        return 42

    returned = reg.register(my_function)
    assert returned is my_function  # usable as a plain call
    assert reg.get('MyArchA') is MyArchA  # the decorator returns the class itself
    assert reg.get('my_function')() == 42


def test_duplicate_name_raises_assertion_error():
    reg = Registry('thing')

    @reg.register()
    class Foo:
        pass

    class Other:
        pass

    Other.__name__ = 'Foo'
    with pytest.raises(AssertionError, match="'Foo'.*'thing'"):
        reg.register(Other)
    with pytest.raises(AssertionError):
        reg.register()(Other)
    assert reg.get('Foo') is Foo  # the first one stays


def test_lookup_falls_back_to_basicsr_suffix(caplog):
    reg = Registry('thing')

    @reg.register(suffix='basicsr')
    class Foo:
        pass

    assert 'Foo_basicsr' in reg and 'Foo' not in reg
    with caplog.at_level('INFO', logger='realsr'):
        assert reg.get('Foo') is Foo
    assert 'Foo_basicsr' in caplog.text
    assert reg.get('Foo_basicsr') is Foo
    with pytest.raises(KeyError):
        reg.get('Foo', suffix=None)  # fallback off


def test_exact_name_wins_over_suffix():
    reg = Registry('thing')

    @reg.register()
    class Bar:
        pass

    class BarOther:
        pass

    BarOther.__name__ = 'Bar'
    reg.register(BarOther, suffix='basicsr')  # same __name__, other key: allowed
    assert reg.get('Bar') is Bar
    assert reg.get('Bar_basicsr') is BarOther


def test_other_suffix():
    reg = Registry('thing')

    @reg.register(suffix='realesrgan')
    class Baz:
        pass

    assert reg.get('Baz_realesrgan') is Baz
    assert reg.get('Baz', suffix='realesrgan') is Baz
    with pytest.raises(KeyError):
        reg.get('Baz')


def test_unknown_name_keyerror_lists_close_names():
    reg = Registry('thing')

    @reg.register()
    class MyArchA:
        pass

    @reg.register()
    class Completely:
        pass

    with pytest.raises(KeyError) as info:
        reg.get('MyArchB')
    msg = info.value.args[0]
    assert "'MyArchB'" in msg and "'thing' registry" in msg
    assert 'MyArchA' in msg and 'Completely' not in msg  # close names only
    # with nothing close, the known names are listed
    with pytest.raises(KeyError) as info:
        reg.get('zzzzzz')
    assert 'MyArchA' in info.value.args[0] and 'Completely' in info.value.args[0]


def test_contains_iter_keys():
    reg = Registry('thing')

    @reg.register()
    class One:
        pass

    @reg.register()
    def two():
        pass

    assert 'One' in reg and 'two' in reg and 'three' not in reg
    assert dict(iter(reg)) == {'One': One, 'two': two}  # iteration yields (name, obj) like BasicSR
    assert list(reg.keys()) == ['One', 'two']
    assert 'thing' in repr(reg)


# ---------------------------------------------------------------------------------------------
# lazy built-in modules: one broken module does not break the others
# ---------------------------------------------------------------------------------------------
@pytest.fixture()
def fake_modules(tmp_path, monkeypatch):
    """A registry filled by two importable modules in tmp_path, one good and one broken."""
    tag = uuid.uuid4().hex[:8]
    holder_name, good_name, broken_name = f'_reg_holder_{tag}', f'_reg_good_{tag}', f'_reg_broken_{tag}'
    reg = Registry('widget', ['realsr._does_not_exist', broken_name, good_name])
    holder = type(sys)(holder_name)
    holder.REG = reg
    monkeypatch.setitem(sys.modules, holder_name, holder)
    (tmp_path / f'{good_name}.py').write_text(textwrap.dedent(f"""
        from {holder_name} import REG

        @REG.register()
        class GoodWidget:
            pass

        @REG.register()
        def good_widget_fn():
            return 'ok'
    """), encoding='utf-8')
    (tmp_path / f'{broken_name}.py').write_text(textwrap.dedent(f"""
        from {holder_name} import REG

        @REG.register()
        class BrokenWidget:
            pass

        raise RuntimeError('boom from the broken module')
    """), encoding='utf-8')
    monkeypatch.syspath_prepend(str(tmp_path))
    yield reg, good_name, broken_name
    for name in (good_name, broken_name):
        sys.modules.pop(name, None)


def test_registry_survives_missing_and_broken_modules(fake_modules, caplog):
    reg, good_name, broken_name = fake_modules
    with caplog.at_level('WARNING', logger='realsr'):
        assert reg.get('GoodWidget').__name__ == 'GoodWidget'
    assert reg.get('good_widget_fn')() == 'ok'
    assert 'GoodWidget' in reg and 'good_widget_fn' in reg.keys()
    assert set(reg.import_errors) == {'realsr._does_not_exist', broken_name}
    assert 'boom from the broken module' in reg.import_errors[broken_name]
    assert 'realsr._does_not_exist' in caplog.text  # the failure is logged, not raised

    with pytest.raises(KeyError) as info:
        reg.get('NoSuchWidget')
    msg = info.value.args[0]
    assert 'realsr._does_not_exist' in msg and broken_name in msg and 'boom from the broken module' in msg


def test_registry_imports_builtins_lazily_once(fake_modules):
    reg, good_name, _ = fake_modules
    assert good_name not in sys.modules  # nothing imported at construction
    assert 'GoodWidget' in reg
    assert good_name in sys.modules
    errors = dict(reg.import_errors)
    assert 'GoodWidget' in reg
    assert reg.import_errors == errors  # not retried


def test_registered_name_does_not_trigger_builtin_import(fake_modules):
    reg, good_name, _ = fake_modules

    @reg.register()
    class UserWidget:
        pass

    assert reg.get('UserWidget') is UserWidget
    assert good_name not in sys.modules


# ---------------------------------------------------------------------------------------------
# import realsr stays light
# ---------------------------------------------------------------------------------------------
HEAVY = ('torch', 'cv2', 'numpy')


@pytest.mark.parametrize('module', ['realsr', 'realsr.registry', 'realsr.archs', 'realsr.option_schema'])
def test_import_is_light(module):
    code = (f'import sys, {module}\n'
            f'heavy = [m for m in {HEAVY!r} if m in sys.modules]\n'
            'print(\"HEAVY:\" + \",\".join(heavy))\n')
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    res = subprocess.run([sys.executable, '-c', code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert 'HEAVY:\n' in res.stdout, f'import {module} loaded: {res.stdout.strip()}'


def test_realsr_has_version():
    import realsr

    assert isinstance(realsr.__version__, str) and realsr.__version__


def test_five_basicsr_registries_exist():
    for name in ('ARCH_REGISTRY', 'MODEL_REGISTRY', 'DATASET_REGISTRY', 'LOSS_REGISTRY', 'METRIC_REGISTRY'):
        assert isinstance(getattr(registry_module, name), Registry)


# ---------------------------------------------------------------------------------------------
# a user's own arch and the built-in names
# ---------------------------------------------------------------------------------------------
def test_user_arch_is_buildable():
    assert ARCH_REGISTRY.get('UserTinyTestNet') is UserTinyTestNet
    opt = {'type': 'UserTinyTestNet', 'num_feat': 6, 'upscale': 2}
    net = build_network(opt)
    assert isinstance(net, UserTinyTestNet)
    assert opt == {'type': 'UserTinyTestNet', 'num_feat': 6, 'upscale': 2}  # the option dict is not consumed
    assert net.body.out_channels == 6
    out = net(torch.zeros(1, 3, 5, 7))
    assert out.shape == (1, 3, 10, 14)


def test_user_arch_passes_option_validation():
    from realsr.option_schema import OptionError, validate_options

    opt = {'name': 'x', 'model_type': 'SRModel', 'datasets': {},
           'network_g': {'type': 'UserTinyTestNet', 'num_feat': 6}}
    validate_options(opt, is_train=False, check_paths=False)
    opt['network_g']['num_fet'] = 6
    with pytest.raises(OptionError, match=r"'network_g\.num_fet'.*did you mean 'num_feat'"):
        validate_options(opt, is_train=False, check_paths=False)


def test_build_network_builtin():
    net = build_network({'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                         'upscale': 2})
    assert type(net).__name__ == 'MSRResNet'
    with pytest.raises(KeyError, match='MSRResNet'):
        build_network({'type': 'MSRResNett'})


@pytest.mark.parametrize('reg, names', [
    (ARCH_REGISTRY, ['MSRResNet', 'RRDBNet']),
    (MODEL_REGISTRY, ['SRModel']),
    (DATASET_REGISTRY, ['PairedImageDataset', 'SingleImageDataset']),
    (LOSS_REGISTRY, ['L1Loss', 'MSELoss', 'CharbonnierLoss']),
    (METRIC_REGISTRY, ['calculate_psnr', 'calculate_ssim', 'calculate_niqe']),
], ids=['arch', 'model', 'dataset', 'loss', 'metric'])
def test_builtin_names_resolve(reg, names):
    for name in names:
        obj = reg.get(name)
        assert obj.__name__ == name
        assert name in reg
    assert reg.import_errors == {}, reg.import_errors  # every built-in module imports
