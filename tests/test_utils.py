import argparse
import os
import pickle
import re

import pytest
import torch
import torch.nn as nn

import checkpoints
import loop
import parallel
import utils
from utils import UserError


def linear_net():
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


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


def test_given_arguments_lists_only_typed_flags():
    parser = argparse.ArgumentParser()
    parser.add_argument('--batch_size', type=int, default=64)
    parser.add_argument('--cutout', action='store_true')
    parser.add_argument('--set', dest='dataset', default='cifar10')
    given = checkpoints.given_arguments(parser, ['--cutout', '--set', 'synthetic'])
    assert given == {'cutout': True, 'dataset': 'synthetic'}
    assert checkpoints.given_arguments(parser, []) == {}


def test_checkpoint_save_is_atomic_and_loads(tmp_path):
    path = str(tmp_path / 'checkpoint.pt')
    checkpoints.save_checkpoint({'epoch': 3, 'model': {'w': torch.ones(2)}}, path)
    checkpoints.save_checkpoint({'epoch': 4, 'model': {'w': torch.ones(2)}}, path)
    assert os.listdir(tmp_path) == ['checkpoint.pt']
    assert checkpoints.load_checkpoint(path)['epoch'] == 4


class Payload:
    def __reduce__(self):
        return (os.system, (f'touch {MARKER}',))


MARKER = None


def test_hostile_checkpoint_is_refused_and_never_runs(tmp_path):
    global MARKER
    MARKER = tmp_path / 'PWNED'
    path = tmp_path / 'evil.pt'
    torch.save({'model': Payload()}, path)
    with pytest.raises(UserError, match='refused') as info:
        checkpoints.load_checkpoint(str(path))
    assert '\n' not in str(info.value)
    assert not MARKER.exists()


def test_truncated_checkpoint_gives_a_clear_error(tmp_path):
    path = tmp_path / 'checkpoint.pt'
    torch.save({'model': {'w': torch.randn(1000)}}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(UserError, match='truncated or damaged'):
        checkpoints.load_checkpoint(str(path))
    with pytest.raises(UserError, match='does not exist'):
        checkpoints.load_checkpoint(str(tmp_path / 'nothing.pt'))


def test_load_weights_accepts_every_form():
    source = linear_net()
    state = source.state_dict()
    for form in (state, {'model': state, 'kind': 'train'}, {'state_dict': state},
                 {f'module.{k}': v for k, v in state.items()}, {f'_orig_mod.{k}': v for k, v in state.items()}):
        target = linear_net()
        checkpoints.load_weights(target, form)
        assert torch.equal(target[0].weight, source[0].weight)


def test_load_weights_names_missing_unexpected_and_misshapen_keys():
    state = linear_net().state_dict()
    broken = dict(state)
    del broken['2.weight']
    broken['head.weight'] = torch.zeros(1)
    with pytest.raises(UserError) as info:
        checkpoints.load_weights(linear_net(), broken, origin='w.pt')
    message = str(info.value)
    assert 'missing keys: 2.weight' in message and 'unexpected keys: head.weight' in message
    other = nn.Sequential(nn.Linear(3, 5), nn.BatchNorm1d(5), nn.Linear(5, 2)).state_dict()
    with pytest.raises(UserError, match=r'0.weight \(5, 3\) vs \(4, 3\)'):
        checkpoints.load_weights(linear_net(), other)
    with pytest.raises(UserError, match='holds no model weights'):
        checkpoints.load_weights(linear_net(), {'epoch': 1})


def test_finite_loss_guard_names_the_first_bad_step():
    guard = loop.FiniteLossGuard(epoch=2)
    guard.update(torch.tensor(1.0), 0)
    guard.check()
    guard.poll()
    guard.update(torch.tensor(float('nan')), 5)
    guard.update(torch.tensor(float('inf')), 6)
    with pytest.raises(loop.NonFiniteLoss, match='epoch 2, step 5'):
        guard.check()
    with pytest.raises(loop.NonFiniteLoss, match='epoch 2, step 5'):
        guard.poll()  # on the CPU the flag is visible at once


def test_create_exp_dir_names_and_refuses_unwritable(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = utils.create_exp_dir('eval', 'demo')
    assert path.startswith('eval-demo-') and os.path.isdir(path)
    assert utils.create_exp_dir('search', 'x', exp_path='exact') == 'exact'
    blocker = tmp_path / 'file'
    blocker.write_text('')
    with pytest.raises(UserError, match='cannot write the experiment folder'):
        utils.create_exp_dir('eval', 'x', exp_path=str(blocker / 'sub'))


def test_rng_state_roundtrip_through_a_checkpoint(tmp_path):
    torch.manual_seed(1)
    state = checkpoints.rng_state()
    expected = torch.rand(3)
    path = str(tmp_path / 'rng.pt')
    checkpoints.save_checkpoint({'rng': state}, path)
    torch.rand(10)
    checkpoints.set_rng_state(checkpoints.load_checkpoint(path)['rng'])
    assert torch.equal(torch.rand(3), expected)


def test_a_file_that_is_not_a_checkpoint_gives_one_sentence(tmp_path):
    for content in (pickle.dumps({'a': 1}), b'just some text'):
        path = tmp_path / 'notes.pt'
        path.write_bytes(content)
        with pytest.raises(UserError) as info:
            checkpoints.load_checkpoint(str(path))
        assert '\n' not in str(info.value)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_progress_lines_come_at_the_first_step_every_report_freq_steps_and_every_30_seconds(monkeypatch, caplog):
    clock = FakeClock()
    monkeypatch.setattr(loop.time, 'monotonic', clock)
    logger = utils.get_logger()
    logger.propagate = True  # let caplog see the lines
    meters = {'loss': utils.AverageMeter(), 'top1': utils.AverageMeter()}
    monitor = loop.StepMonitor(3, 10, 100, meters, loop.GracefulStop(), logger, 50, 'train', parallel.Distributed())
    batches = monitor.track(range(100), 0)
    logits, targets = torch.tensor([[2.0, 0.0]]), torch.tensor([0])
    with caplog.at_level('INFO', logger='darts'):
        for step in batches:
            clock.now += 2.0 if step < 40 else 0.1  # slow steps first: 30 s pass before step 50
            assert not monitor.after_step(step, torch.tensor(0.5), logits, targets)
    lines = [record.getMessage() for record in caplog.records]
    assert [int(line.split(' step ')[1].split('/')[0]) for line in lines] == [1, 16, 31, 51]
    assert lines[0].startswith('train epoch 3/10 step 1/100 (1%) loss 0.5000 top1 100.00 | 2.00 s/step, 3:18 left')
    assert lines[1].startswith('train epoch 3/10 step 16/100 (16%)') and 'left in the epoch' in lines[1]


def test_a_stop_request_saves_then_ends_the_run_with_the_signals_exit_status(capsys):
    logger = utils.get_logger()
    stop = loop.GracefulStop()
    stop.requested = 'SIGTERM'
    meters = {'loss': utils.AverageMeter(), 'top1': utils.AverageMeter()}
    monitor = loop.StepMonitor(0, 1, 4, meters, stop, logger, 50, 'train', parallel.Distributed())
    monitor.track(range(4), 0)
    assert monitor.after_step(0, torch.tensor(0.5), torch.tensor([[2.0, 0.0]]), torch.tensor([0]))
    with pytest.raises(SystemExit) as exit_info:
        utils.run_cli(lambda: monitor.stop_run(1, 'run'))
    assert exit_info.value.code == 143
    out = capsys.readouterr().out
    assert 'SIGTERM received: saved a checkpoint at epoch 0, step 1; continue with --resume run' in out
    stop.requested = 'SIGINT'
    with pytest.raises(SystemExit) as exit_info:
        utils.run_cli(lambda: monitor.stop_run(1, 'run'))
    assert exit_info.value.code == 130


def resume_parser():
    parser = argparse.ArgumentParser()
    parser.add_argument('--learning_rate', type=float, default=0.025)
    parser.add_argument('--epochs', type=int, default=50)
    parser.add_argument('--method')
    parser.add_argument('--exp_path')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--resume', nargs='?', const='')
    return parser


def test_resume_accepts_the_same_command_line_and_refuses_what_differs(tmp_path):
    saved = {'learning_rate': 0.1, 'epochs': 2, 'method': 'pc_darts', 'exp_path': str(tmp_path), 'device': 'auto',
             'resume': None}
    checkpoints.save_checkpoint({'kind': 'train', 'args': saved}, tmp_path / 'checkpoint.pt')
    parser, run = resume_parser(), ['--resume', str(tmp_path)]
    same = ['--method', 'pc_darts', '--learning_rate', '0.1', '--epochs', '2', '--device', 'cpu']
    args, checkpoint = checkpoints.resolve_arguments(parser, same + run, 'train')
    assert (args.learning_rate, args.epochs, args.device, checkpoint['kind']) == (0.1, 2, 'cpu', 'train')
    args, _ = checkpoints.resolve_arguments(parser, run + ['--epochs', '5'], 'train')
    assert args.epochs == 5  # a longer run
    for flags, message in ((['--learning_rate', '0.2'], "--learning_rate 0.2 differs from the checkpoint's 0.1"),
                           (['--method', 'darts'], "--method darts differs from the checkpoint's pc_darts"),
                           (['--epochs', '1'], "--epochs 1 differs from the checkpoint's 2, and a resumed run keeps "
                                               "the values it was built with (--epochs may only grow)")):
        with pytest.raises(UserError, match=re.escape(message)):
            checkpoints.resolve_arguments(parser, run + flags, 'train')


def test_architecture_weights_are_summarized_in_one_line():
    uniform = [[0.125] * 8, [0.125] * 8]
    assert loop.summarize_weights(uniform) == 'largest per edge 0.125 0.125; mean entropy 2.079 (uniform 2.079)'
    assert loop.summarize_weights([[1.0, 0.0], [0.5, 0.5]]).endswith('mean entropy 0.347 (uniform 0.693)')
    assert loop.summarize_weights([0.5, 0.25, 0.25]) == '0.500 0.250 0.250'
