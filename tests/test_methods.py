"""methods.py: the registry, the methods of the seed papers on the extension points, and the "Adding a method"
example (docs/adding-a-method.md), run exactly as the page prints it."""
import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, load_script, metrics, supernet

import methods
from architect import SearchObjective
from utils import UserError

train_search = load_script('train_search')

TINY = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '256', '--synthetic_test_size',
        '32', '--num_classes', '4', '--init_channels', '4', '--layers', '3', '--batch_size', '32', '--device', 'cpu',
        '--report_freq', '1000']


def test_flags_switch_on_their_methods():
    assert methods.build({}) == []
    assert [type(m) for m in methods.build({'partial_channels': 4})] == [methods.EdgeNormalization]
    assert methods.build({'partial_channels': 4, 'edge_norm': False}) == []
    # partial channels given per stage (P-DARTS, DrNAS) leave --partial_channels at 1
    assert [type(m) for m in methods.build({'partial_channels': 1, 'stage_partial_channels': (1, 2)})] == [
        methods.EdgeNormalization]
    assert [type(m) for m in methods.build({'alpha_attention': True})] == [methods.EdgeNormalization]
    found = methods.build({'hd_on_weights': True, 'da2s': True, 'da2s_weight': 0.5})
    assert [type(m) for m in found] == [methods.DiscretizationAware, methods.DA2S] and found[1].weight == 0.5


def test_presets_are_registered_with_their_methods():
    presets = methods.presets()
    assert {'alpha_darts', 'att_darts', 'da2s', 'dadarts', 'darts', 'pc_darts', 'beta_darts'} <= set(presets)
    assert presets['pc_darts']['warmup_epochs'] == 15 and presets['da2s'] == {'da2s': True, 'edge_norm': False}
    parser = train_search.build_parser()
    assert parser.parse_args(['--method', 'da2s']).method == 'da2s'
    assert all(action.help for action in parser._actions if action.dest != 'help')


def test_two_methods_that_own_the_edge_weights_are_refused():
    with pytest.raises(UserError, match=r'--edge_norm .* and --da2s both define the edge weights; use one of them'):
        methods.build({'partial_channels': 2, 'da2s': True})
    with pytest.raises(UserError, match='both define the edge weights'):
        train_search.main(TINY + ['--da2s', '--edge_norm'])


def test_da2s_chooses_edges_by_its_betas():
    arch = supernet(4, 3, 3, image_size=8, da2s=True)
    net = arch.net
    with torch.no_grad():
        net.betas_reduce.copy_(torch.tensor([5.0, -1, 4, -1, -1, 3, 2, -1, -1, -1, 9, 8]))
    inputs = [source for _, source in arch.genotype().reduce]
    assert inputs[2:] == [0, 2, 2, 3, 3, 4], 'nodes 1 to 3 keep their two largest betas, strongest first'


class Zeroing(methods.Method):
    """A perturbation for the test: the weight step mixes with zero op weights."""

    def __init__(self):
        self.losses = []

    def perturb(self, weights, loss_of, arch):
        self.losses.append(loss_of(weights))
        return {cell: w.replace(ops=w.ops * 0) for cell, w in weights.items()}


def test_a_perturbation_reaches_the_weight_step_only():
    torch.manual_seed(0)
    arch = supernet(4, 3, 3, image_size=8)
    net = arch.net
    zeroing = Zeroing()
    arch.methods.append(zeroing)
    objective, x, y = SearchObjective(arch), torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
    _, logits, _ = objective.loss(x, y, 'weights')
    zero = {cell: w.replace(ops=w.ops * 0) for cell, w in arch.weights().items()}
    assert torch.equal(logits, net(x, zero)) and len(zeroing.losses) == 1 and torch.isfinite(zeroing.losses[0])
    _, logits, _ = objective.loss(x, y, 'alpha')
    assert torch.allclose(logits, net(x, arch.weights())) and len(zeroing.losses) == 1


def readme_example():
    """The Python block of docs/adding-a-method.md."""
    page = open(os.path.join(ROOT, 'docs', 'adding-a-method.md'), encoding='utf-8').read()
    return re.search(r'```python\n(.*?)```', page, re.DOTALL).group(1)


def mean_op_entropy(folder):
    state = torch.load(folder / 'checkpoint.pt', weights_only=True)['model']
    probabilities = torch.cat([torch.softmax(state[name], -1) for name in ('alphas_normal', 'alphas_reduce')])
    return -(probabilities * probabilities.log()).sum(-1).mean().item()


@pytest.mark.slow
def test_the_example_method_is_one_class_and_works(in_tmp, monkeypatch):
    monkeypatch.setattr(methods, 'REGISTRY', list(methods.REGISTRY))
    exec(readme_example(), vars(methods))  # as if pasted at the end of methods.py (test below: successors.py)
    assert len(readme_example().splitlines()) <= 25
    assert methods.presets()['entropy'] == {'entropy_weight': 0.1}
    flags = TINY + ['--epochs', '2', '--arch_learning_rate', '0.05']
    train_search.main(flags + ['--exp_path', 'plain'])
    train_search.main(flags + ['--method', 'entropy', '--entropy_weight', '1.0', '--exp_path', 'entropy'])
    rows = metrics(in_tmp / 'entropy')
    assert all(row['alpha_entropy'] > 0 for row in rows) and 'alpha_entropy' not in metrics(in_tmp / 'plain')[-1]
    assert mean_op_entropy(in_tmp / 'entropy') < mean_op_entropy(in_tmp / 'plain') < math.log(8)


@pytest.mark.slow
def test_the_example_pasted_into_successors_is_taken_in_by_every_script_and_test(tmp_path):
    """In a copy of the repository with nothing changed but the page's block at the end of successors.py."""
    copy = tmp_path / 'repo'
    files = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.join(ROOT, name), copy / name)
    with open(copy / 'successors.py', 'a', encoding='utf-8') as successors:
        successors.write('\n\n' + readme_example())

    def python(*argv):
        return subprocess.run([sys.executable, *argv], cwd=copy, capture_output=True, text=True, timeout=300)
    searched = python('train_search.py', *TINY, '--method', 'entropy', '--epochs', '1', '--exp_path', 'run')
    assert searched.returncode == 0, searched.stderr
    assert metrics(copy / 'run')[0]['alpha_entropy'] > 0
    timed = python('bench.py', '--tiny', '--methods', 'entropy', '--cases', 'search', '--steps', '1', '--warmup', '0',
                   '--device', 'cpu', '--output', 'bench.json')
    assert timed.returncode == 0, timed.stderr
    assert [row['case'] for row in json.loads((copy / 'bench.json').read_text())['results']] == ['search entropy']
    health = python('-m', 'pytest', '-q', '-p', 'no:cacheprovider', 'tests/test_code_health.py')
    assert health.returncode == 0, health.stdout
    collected = python('-m', 'pytest', '-q', '--collect-only', '-p', 'no:cacheprovider', 'tests/test_cuda.py',
                       'tests/test_architect.py', 'tests/test_presets.py').stdout
    for test in ('test_every_method_runs_on_cuda_with_tensorboard[entropy]',
                 'test_a_search_step_never_reads_the_device_on_the_host[entropy-False',
                 'test_a_preset_in_the_darts_space_has_its_authors_settings[entropy]'):
        assert test in collected, collected


def test_a_constructor_parameter_that_no_flag_sets_is_refused_when_the_method_registers(monkeypatch):
    monkeypatch.setattr(methods, 'REGISTRY', list(methods.REGISTRY))

    class Misspelt(methods.Method):
        def __init__(self, entropy_wieght=0.0):
            self.weight = entropy_wieght

        @staticmethod
        def add_arguments(parser):
            parser.add_argument('--entropy_weight', type=float, default=0.0)
    with pytest.raises(TypeError, match=r'^Misspelt.__init__ takes entropy_wieght, which no flag of its '
                                        r'add_arguments \(nor partial_channels'):
        methods.register(Misspelt)
    assert Misspelt not in methods.REGISTRY
