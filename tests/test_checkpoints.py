"""checkpoints.py: atomic saves, loading that runs no code, every form of weights, resuming."""
import argparse
import os
import pickle
import re

import pytest
import torch
import torch.nn as nn

import checkpoints
from utils import UserError


def linear_net():
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


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
