import importlib.util
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# One thread: several tests start processes of their own, and two OpenMP threads per process on two
# cores make tiny ops many times slower when anything else runs.
torch.set_num_threads(1)


def load_script(name):
    """Import a top-level script by path (`test.py` would otherwise clash with the standard library's
    `test` package)."""
    module_name = f'script_{name}'
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, os.path.join(ROOT, f'{name}.py'))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[module_name] = module
    return sys.modules[module_name]


def run_script(name, args, cwd, **kwargs):
    """Start a script in its own process (for signals and exit codes); stdout and stderr are captured.
    One thread each: two processes with two OpenMP threads apiece on two cores slow tiny ops twentyfold."""
    env = {**os.environ, 'OMP_NUM_THREADS': '1', **kwargs.pop('env', {})}
    return subprocess.Popen([sys.executable, os.path.join(ROOT, f'{name}.py'), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in a fresh folder so that experiment folders land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
