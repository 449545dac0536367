import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import time

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# One thread, here and in every process a test starts (they inherit the variable: the scripts, torchrun's
# workers, a sweep's submitit jobs): two OpenMP threads per process on two cores make tiny ops many times
# slower when anything else runs.
torch.set_num_threads(1)
os.environ['OMP_NUM_THREADS'] = '1'


def supernet(*sizes, **flags):
    """An architecture.Architecture of a model_search.Network from flags named as train_search.py's: the
    network takes its options, and the search methods the flags switch on come along (edge normalisation
    with partial channels, DA2S, ...). The supernet is its `.net`."""
    import methods
    from architecture import Architecture
    from model_search import Network
    options = {name: value for name, value in flags.items() if name in inspect.signature(Network).parameters}
    return Architecture(Network(*sizes, **options), methods.build(flags))


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
    """Start a script in its own process (for signals and exit codes); stdout and stderr are captured."""
    env = {**os.environ, **kwargs.pop('env', {})}
    return subprocess.Popen([sys.executable, os.path.join(ROOT, f'{name}.py'), *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for_log(path, pattern, process, after=0, timeout=300):
    """Index of the first line of `path` from line `after` on that matches `pattern`; fails if `process`
    ends first."""
    regex = re.compile(pattern)
    deadline = time.time() + timeout
    while time.time() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        for index in range(after, len(lines)):
            if regex.search(lines[index]):
                return index
        if process.poll() is not None:
            raise AssertionError(f'the run ended before {pattern!r} appeared: {process.communicate()[1][-2000:]}')
        time.sleep(0.05)
    raise AssertionError(f'{pattern!r} did not appear in {path} within {timeout}s')


def finish(process, timeout=600):
    """Wait for a process from `run_script` to end successfully; returns its stdout."""
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out


def metrics(folder):
    """The rows of a run folder's metrics.jsonl."""
    return [json.loads(line) for line in (folder / 'metrics.jsonl').read_text().splitlines()]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in a fresh folder so that experiment folders land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
