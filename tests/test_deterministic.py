"""--deterministic: PyTorch's and cuDNN's deterministic algorithms, and one sentence for an op that has none."""
import os

import pytest
import torch
from conftest import load_script, metrics

import utils

train_search = load_script('train_search')
train = load_script('train')

MEASURED = ('time_s', 'images_per_s', 'peak_memory_mb')  # what differs from run to run
DATA = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '64', '--synthetic_test_size', '32',
        '--num_classes', '4', '--init_channels', '8', '--layers', '3', '--batch_size', '32', '--device', 'cpu',
        '--report_freq', '1000', '--epochs', '2', '--deterministic']


@pytest.fixture
def restores_defaults():
    yield
    utils.configure_device(torch.device('cpu'))
    assert not torch.are_deterministic_algorithms_enabled()


def rows_without_times(folder):
    return [{key: value for key, value in row.items() if key not in MEASURED} for row in metrics(folder)]


def test_deterministic_algorithms_are_on_only_when_asked(restores_defaults, monkeypatch):
    monkeypatch.delenv('CUBLAS_WORKSPACE_CONFIG', raising=False)
    utils.configure_device(torch.device('cpu'), deterministic=True)
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    assert not torch.backends.cudnn.benchmark and os.environ['CUBLAS_WORKSPACE_CONFIG'] == ':4096:8'
    utils.configure_device(torch.device('cpu'))
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark


@pytest.mark.slow
@pytest.mark.parametrize('script, flags', [(train_search, ['--method', 'gdas', '--unrolled']),
                                           (train, ['--arch', 'DARTS_V2', '--auxiliary', '--cutout'])],
                         ids=['train_search', 'train'])
def test_two_deterministic_runs_write_the_same_metrics_and_weights(script, flags, in_tmp, restores_defaults):
    for name in ('first', 'second'):
        script.main(DATA + flags + ['--exp_path', name])
        assert torch.are_deterministic_algorithms_enabled()
    assert rows_without_times(in_tmp / 'first') == rows_without_times(in_tmp / 'second')
    first, second = (torch.load(in_tmp / name / 'checkpoint.pt', weights_only=False)['model']
                     for name in ('first', 'second'))
    assert first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


def test_an_op_without_a_deterministic_version_is_named_in_one_sentence(restores_defaults, capsys):
    def main():
        utils.configure_device(torch.device('cpu'), deterministic=True)
        torch.zeros(4).put_(torch.tensor([0, 0]), torch.ones(2))  # put_ has no deterministic version
    with pytest.raises(SystemExit) as stopped:
        utils.run_cli(main)
    assert stopped.value.code == 2
    assert capsys.readouterr().err == ('error: --deterministic: put_ has no deterministic implementation on this '
                                       'device; run without --deterministic\n')

    def fails():
        raise RuntimeError('some other failure')
    with pytest.raises(RuntimeError, match='some other failure'):  # any other error keeps its traceback
        utils.run_cli(fails)
