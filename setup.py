"""Packaging for realsr. Imports nothing but setuptools: no torch at build time."""
import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    # Parsed as text, not exec'd, so it works on every Python and never needs a generated file.
    with open(os.path.join(HERE, 'realsr', 'version.py'), encoding='utf-8') as f:
        for line in f:
            if line.startswith('__version__'):
                return line.split('=', 1)[1].strip().strip('\'"')
    raise RuntimeError('realsr/version.py has no __version__')


def read_requirements():
    with open(os.path.join(HERE, 'requirements.txt'), encoding='utf-8') as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.startswith('#')]


setup(
    name='realsr',
    version=read_version(),
    description='Training and testing blind (real-world) image super-resolution models, BasicSR-compatible',
    long_description=open(os.path.join(HERE, 'README.md'), encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['realsr', 'realsr.*']),
    package_data={'realsr': ['metrics/*.npz']},
    include_package_data=True,
    python_requires='>=3.9',
    install_requires=read_requirements(),
    extras_require={
        # spandrel: loading community checkpoints whose arch realsr lacks, and a test oracle.
        'spandrel': ['spandrel>=0.4', 'einops', 'safetensors'],
        'onnx': ['onnx', 'onnxruntime'],  # realsr-export and its verification
        'wandb': ['wandb'],  # logger.wandb
        'test': ['pytest>=7', 'pytest-timeout', 'spandrel>=0.4', 'einops', 'safetensors', 'onnx', 'onnxruntime',
                 'jsonschema', 'wandb'],
    },
    entry_points={
        'console_scripts': [
            'realsr-train=realsr.train:console_main',
            'realsr-test=realsr.test:console_main',
            'realsr-infer=realsr.infer:main',
            'realsr-export=realsr.export:main',
            'realsr-options=realsr.option_tool:main',
        ],
    },
)
