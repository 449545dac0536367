"""utils.py: meters, accuracy, counts, devices, folders and one-line summaries."""
import os

import pytest
import torch
import torch.nn as nn

import utils
from utils import UserError


def test_accuracy_topk_and_soft_targets():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
    target = torch.tensor([1, 1, 0])
    top1, top2 = utils.accuracy(logits, target, topk=(1, 2))
    assert top1.item() == pytest.approx(100 / 3) and top2.item() == pytest.approx(200 / 3)
    soft = torch.nn.functional.one_hot(target, 3).float() * 0.7 + 0.1
    assert utils.accuracy(logits, soft)[0].item() == pytest.approx(100 / 3)


def test_average_meter_weights_by_count():
    meter = utils.AverageMeter()
    meter.update(torch.tensor(1.0), 1)
    meter.update(4.0, 3)
    assert meter.avg == pytest.approx(13 / 4) and meter.count == 4


def test_count_parameters_excludes_the_auxiliary_head():
    net = nn.Module()
    net.body = nn.Linear(10, 10)
    net.auxiliary_head = nn.Linear(10, 10)
    assert utils.count_parameters_in_millions(net) == pytest.approx(110 / 1e6)


def test_count_flops_of_a_convolution():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    assert utils.count_flops(conv, (1, 3, 10, 10)) == 2 * 3 * 8 * 9 * 100


def test_get_device_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert utils.get_device('auto').type == 'cpu'
    assert utils.get_device('cpu').type == 'cpu'
    with pytest.raises(UserError, match='no usable CUDA device'):
        utils.get_device('cuda')
    with pytest.raises(UserError, match='unknown --device'):
        utils.get_device('tpu')


def test_create_exp_dir_names_and_refuses_unwritable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = utils.create_exp_dir('eval', 'demo')
    assert path.startswith('eval-demo-') and os.path.isdir(path)
    assert utils.create_exp_dir('search', 'x', exp_path='exact') == 'exact'
    blocker = tmp_path / 'file'
    blocker.write_text('')
    with pytest.raises(UserError, match='cannot write the experiment folder'):
        utils.create_exp_dir('eval', 'x', exp_path=str(blocker / 'sub'))


def test_architecture_weights_are_summarized_in_one_line():
    uniform = [[0.125] * 8, [0.125] * 8]
    assert utils.summarize_weights(uniform) == 'largest per edge 0.125 0.125; mean entropy 2.079 (uniform 2.079)'
    assert utils.summarize_weights([[1.0, 0.0], [0.5, 0.5]]).endswith('mean entropy 0.347 (uniform 0.693)')
    assert utils.summarize_weights([0.5, 0.25, 0.25]) == '0.500 0.250 0.250'


def test_an_option_of_flags_takes_a_value_that_starts_with_two_dashes(capsys):
    parser = utils.ArgumentParser(prog='sweep.py')
    parser.add_argument('--search_flags', default='', metavar='FLAGS')
    parser.add_argument('--other', default='')
    assert parser.parse_args(['--search_flags', '--unrolled']).search_flags == '--unrolled'
    assert parser.parse_args(['--search_flags', '--epochs 3 --unrolled']).search_flags == '--epochs 3 --unrolled'
    with pytest.raises(SystemExit):
        parser.parse_args(['--other', '--unrolled'])
    assert 'error: argument --other: expected one argument (see sweep.py --help)' in capsys.readouterr().err
