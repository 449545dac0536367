"""--tensorboard: the event files hold every scalar of metrics.jsonl, the architecture weights and the cells,
read back with TensorBoard's own reader; a resumed run writes each epoch once; a missing TensorBoard or
Graphviz is handled in one sentence."""
import importlib

import graphviz
import pytest
from conftest import load_script, metrics
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from utils import UserError

train = load_script('train')
train_search = load_script('train_search')

TINY = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '64', '--synthetic_test_size',
        '32', '--num_classes', '4', '--init_channels', '4', '--layers', '3', '--batch_size', '32', '--device', 'cpu',
        '--report_freq', '1000', '--tensorboard']


def events(folder):
    accumulator = EventAccumulator(str(folder / 'tensorboard'), size_guidance={'scalars': 0, 'images': 0,
                                                                               'histograms': 0})
    accumulator.Reload()
    return accumulator


def test_a_search_writes_every_scalar_the_weights_and_the_cells(in_tmp):
    train_search.main(TINY + ['--epochs', '2', '--beta_decay_weight', '50', '--exp_path', 'search'])
    board, rows = events(in_tmp / 'search'), metrics(in_tmp / 'search')
    numbers = {name for name, value in rows[0].items()
               if isinstance(value, (int, float)) and not isinstance(value, bool) and name != 'epoch'}
    assert numbers <= set(board.Tags()['scalars']) and 'alpha_beta_decay' in numbers
    for name in ('valid_top1', 'train_loss', 'beta_decay_weight'):
        scalars = board.Scalars(name)
        assert [event.step for event in scalars] == [row['epoch'] for row in rows]
        assert [event.value for event in scalars] == pytest.approx([row[name] for row in rows])
    assert {'arch_weights/normal_ops', 'arch_weights/reduce_ops', 'cell/normal', 'cell/reduction'} <= set(
        board.Tags()['images'])
    assert {'arch_weights/normal_ops', 'arch_weights/reduce_ops'} <= set(board.Tags()['histograms'])
    assert [event.step for event in board.Images('cell/normal')] == [0, 1]
    assert board.Images('arch_weights/normal_ops')[0].height == 14  # one row per edge


def test_training_writes_its_scalars_and_a_resumed_run_writes_each_epoch_once(in_tmp):
    train.main(TINY + ['--epochs', '2', '--exp_path', 'eval'])
    train.main(['--resume', 'eval', '--epochs', '3'])
    board = events(in_tmp / 'eval')
    assert [event.step for event in board.Scalars('test_top1')] == [0, 1, 2]
    assert [event.value for event in board.Scalars('train_loss')] == pytest.approx(
        [row['train_loss'] for row in metrics(in_tmp / 'eval')])


def test_without_graphviz_the_cells_are_left_out_and_the_rest_is_written(in_tmp, monkeypatch):
    def no_dot(*args, **kwargs):
        raise graphviz.ExecutableNotFound(['dot'])
    monkeypatch.setattr(graphviz.Digraph, 'pipe', no_dot)
    train_search.main(TINY + ['--epochs', '1', '--exp_path', 'search'])
    board = events(in_tmp / 'search')
    assert 'valid_top1' in board.Tags()['scalars'] and 'cell/normal' not in board.Tags()['images']
    assert 'the cells are left out of TensorBoard' in (in_tmp / 'search' / 'log.txt').read_text()


def test_a_missing_tensorboard_is_one_sentence_and_leaves_no_folder(in_tmp, monkeypatch):
    real_import = importlib.import_module
    monkeypatch.setattr(importlib, 'import_module', lambda name: (_ for _ in ()).throw(ImportError)
                        if name == 'tensorboard' else real_import(name))
    with pytest.raises(UserError, match='--tensorboard needs tensorboard; install it with `pip install tensorboard`'):
        train_search.main(TINY + ['--epochs', '1', '--exp_path', 'search'])
    assert not (in_tmp / 'search').exists()
