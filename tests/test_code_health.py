"""The code base keeps no unused code: vulture at 60% confidence finds nothing beyond its whitelist. A method
class is used through its @register decorator (methods.REGISTRY), which vulture is told to see through."""
import glob
import os
import subprocess
import sys

from conftest import ROOT


def test_vulture_finds_no_unused_code():
    modules = sorted(glob.glob(os.path.join(ROOT, '*.py')))
    result = subprocess.run([sys.executable, '-m', 'vulture', '--min-confidence', '60', '--ignore-decorators',
                             '@register', *modules,
                             os.path.join(ROOT, 'tests', 'vulture_whitelist.py')], capture_output=True, text=True)
    assert result.returncode == 0 and not result.stdout, result.stdout + result.stderr
