"""DARTS-ES: early stopping on the Hessian's dominant eigenvalue, against RobustDARTS's EVLocalAvg."""
import json

import pytest
import torch
from conftest import load_script, metrics

import curvature
import early_stopping
import genotypes
import utils

train_search = load_script('train_search')


def stopped(values_of, epochs=50, every=2):
    """(epoch after which the search stops, Stop) as train_search.py decides after every epoch, or None."""
    history = []
    for epoch in range(epochs):
        fields = {'hessian_eigenvalue': values_of(epoch)} if curvature.due(epoch, epochs, every) else {}
        stop = early_stopping.decide(history, epoch, fields, epochs, every, early_stopping.Rule())
        if stop:
            return epoch, stop
        history.append({'epoch': epoch, **fields})
    return None


# (epoch it stops after, epoch it keeps, latest local average, the one 4 measurements back) from automl/RobustDARTS
# 3dec3fe's src/utils.py EVLocalAvg(5, every, epochs), fed every `every` epochs and at the last, with
# early_stop(epoch, 1.3, es_start_epoch, 4) after each but the last (run outside this repository).
SLOW_THEN_FAST = lambda epoch: 0.1 if epoch < 20 else 0.1 * 1.15 ** (epoch - 20)  # noqa: E731
JUMPING = lambda epoch: [0.3, 0.2, 0.25, 0.2, 0.22, 0.21][epoch % 6] * (1 if epoch < 30 else 3)  # noqa: E731


@pytest.mark.parametrize('values_of, every, theirs', [
    (SLOW_THEN_FAST, 2, (26, 14, 0.14769134031249997, 0.1)),
    (SLOW_THEN_FAST, 3, (30, 12, 0.21209167732353312, 0.1)),
    (JUMPING, 2, (30, 18, 0.378, 0.248)),
    (JUMPING, 1, (30, 24, 0.356, 0.236)),
])
def test_the_search_stops_where_robustdarts_stops_and_keeps_the_same_epoch(values_of, every, theirs):
    epoch, stop = stopped(values_of, every=every)
    assert (epoch, stop.epoch) == theirs[:2]
    assert (stop.current, stop.previous) == pytest.approx(theirs[2:])


def test_a_slowly_growing_eigenvalue_never_stops_and_the_last_epoch_never_does():
    assert stopped(lambda epoch: 0.05 + 0.001 * epoch) is None
    assert stopped(lambda epoch: 1.0 if epoch < 49 else 100.0, every=1) is None  # grows at the last epoch only
    assert early_stopping.local_averages([1, 2, 3, 4, 5, 6, 7], 5) == [2, 2.5, 3, 4, 5]


def test_early_stopping_needs_the_eigenvalue_and_one_stage():
    rule = dict(window=5, factor=1.3, start_epoch=10, delta=4, decay_factor=3, max_weight_decay=0.0243,
                rollback_epochs=0)
    assert early_stopping.rule_of('off', **rule, hessian_every=0, stages=3, selection='pt') is None
    assert early_stopping.rule_of('ada', **rule, hessian_every=2, stages=1, selection='darts').adaptive
    with pytest.raises(utils.UserError, match='--early_stop es watches the Hessian.*give --hessian_eigenvalue N'):
        early_stopping.rule_of('es', **rule, hessian_every=0, stages=1, selection='darts')
    with pytest.raises(utils.UserError, match='leave out --stage_layers and --selection pt'):
        early_stopping.rule_of('ada', **rule, hessian_every=2, stages=1, selection='pt')


def test_darts_ada_goes_back_until_the_weight_decay_reaches_robustdarts_last_round():
    """RobustDARTS's final_iteration: round(log(max_weight_decay) / log(weight_decay), 1) == 1."""
    assert early_stopping.at_max_weight_decay(0.03, 0.03) and early_stopping.at_max_weight_decay(243e-4, 243e-4)
    assert not early_stopping.at_max_weight_decay(3e-3, 0.03) and not early_stopping.at_max_weight_decay(81e-4, 243e-4)
    assert early_stopping.at_max_weight_decay(0.029, 0.03)  # close enough, as theirs rounds


TINY = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '64', '--synthetic_test_size',
        '32', '--num_classes', '4', '--init_channels', '4', '--layers', '2', '--batch_size', '32', '--device', 'cpu',
        '--report_freq', '1000', '--epochs', '12', '--hessian_eigenvalue', '1', '--es_start_epoch', '2',
        '--exp_path', 'search']


@pytest.mark.slow
def test_a_stopped_search_keeps_the_earlier_cell_says_why_and_stays_stopped(in_tmp, monkeypatch):
    # RobustDARTS's EVLocalAvg stops these values (1 until epoch 5, then doubling) after epoch 8, keeping epoch 2.
    epochs = iter(range(12))  # measured after every epoch
    monkeypatch.setattr(curvature, 'hessian_eigenvalue',
                        lambda objective, batches, decay: (lambda epoch: 1.0 if epoch < 6 else 2.0 ** (epoch - 6))(
                            next(epochs)))
    kept = train_search.main(TINY + ['--early_stop'])
    rows = metrics(in_tmp / 'search')
    assert [row['epoch'] for row in rows] == list(range(9)) and rows[-1]['early_stop_keeps'] == 2
    assert kept == genotypes.genotype_from_fields(rows[2]['genotype'])
    assert genotypes.parse_genotype('search/genotype.json') == kept
    log = (in_tmp / 'search' / 'log.txt').read_text()
    assert ('DARTS-ES: the local average of the Hessian\'s dominant eigenvalue grew from 1 (epoch 2) to 1.8, 1.80 '
            'times, more than --es_factor 1.30: the search stops after epoch 8 and keeps the cell of epoch 2') in log
    assert log.count('final genotype = ') == 1
    assert train_search.main(['--resume', 'search']) == kept  # a resumed stopped search trains no further
    assert len(metrics(in_tmp / 'search')) == 9
    assert json.loads((in_tmp / 'search' / 'args.json').read_text())['early_stop'] == 'es'


def eigenvalues(monkeypatch, values, fail_at=None):
    """curvature.hessian_eigenvalue gives `values` one after the other; with `fail_at`, that call fails
    (as a crash would, after the epoch's training) without using its value up."""
    calls = iter(range(len(values)))
    pending = []

    def measured(objective, batches, decay):
        index = pending.pop() if pending else next(calls)
        if index == fail_at and not measured.failed:
            measured.failed = True
            pending.append(index)
            raise RuntimeError('crash')
        return values[index]
    measured.failed = False
    monkeypatch.setattr(curvature, 'hessian_eigenvalue', measured)


# Doubling from epoch 6 makes RobustDARTS's rule fire after epoch 8 and go back to epoch 2; after that the
# eigenvalue stays flat.
ADA_VALUES = [1.0] * 6 + [2.0, 4.0, 8.0] + [1.0] * 9
ADA = TINY + ['--early_stop', 'ada', '--ada_factor', '10', '--ada_max_weight_decay', '0.03']
MEASURED = ('time_s', 'images_per_s', 'peak_memory_mb')  # what differs from run to run


@pytest.mark.slow
def test_darts_ada_goes_back_with_a_larger_weight_decay_and_resumes_exactly(in_tmp, monkeypatch):
    eigenvalues(monkeypatch, ADA_VALUES)
    train_search.main(ADA)
    rows = metrics(in_tmp / 'search')
    assert [row['epoch'] for row in rows] == list(range(12)), 'the epochs after epoch 2 were run again'
    assert [row['weight_decay'] for row in rows] == pytest.approx([3e-4] * 3 + [3e-3] * 9)
    assert [row['hessian_eigenvalue'] for row in rows] == ADA_VALUES[:3] + ADA_VALUES[9:]
    log = (in_tmp / 'search' / 'log.txt').read_text()
    assert ('DARTS-ADA: the local average of the Hessian\'s dominant eigenvalue grew from 1 (epoch 2) to 3.2 after '
            'epoch 8, 3.20 times, more than --es_factor 1.30: back to the end of epoch 2, with the weight decay of w '
            'raised from 0.0003 to 0.003') in log
    checkpoint = torch.load(in_tmp / 'search' / 'checkpoint.pt', weights_only=False)
    assert checkpoint['optimizers']['w']['param_groups'][0]['weight_decay'] == pytest.approx(3e-3)
    assert not list((in_tmp / 'search').glob('snapshot-*.pt')), 'the snapshots go once the search is done'

    # The same search, crashed in epoch 10 after going back, then resumed: the same result.
    eigenvalues(monkeypatch, ADA_VALUES, fail_at=16)
    with pytest.raises(RuntimeError, match='crash'):
        train_search.main([('again' if arg == 'search' else arg) for arg in ADA])
    assert sorted(path.name for path in (in_tmp / 'again').glob('snapshot-*.pt')) == \
        [f'snapshot-{epoch}.pt' for epoch in range(3, 10)], 'those it may go back to, of the epochs since going back'
    train_search.main(['--resume', 'again'])
    resumed = metrics(in_tmp / 'again')
    assert [{k: v for k, v in row.items() if k not in MEASURED} for row in resumed] == \
        [{k: v for k, v in row.items() if k not in MEASURED} for row in rows]
    again = torch.load(in_tmp / 'again' / 'checkpoint.pt', weights_only=False)
    assert all(torch.equal(checkpoint['model'][key], again['model'][key]) for key in checkpoint['model'])


def mean_skip_weight(row):
    """The normal cell's mean softmax weight of skip_connect (S3's columns: none, skip_connect, sep_conv_3x3)."""
    ops = row['arch_weights']['normal']['ops']
    return sum(edge[1] for edge in ops) / len(ops)


@pytest.mark.slow
def test_darts_in_s3_drives_skip_up_as_the_eigenvalue_rises_and_early_stopping_stops_it(in_tmp):
    """RobustDARTS's failure mode on generated data, one seed: a deep supernet on a hard task (10 classes, 64
    images to train the weights) with a fast architecture step."""
    train_search.main(['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '128',
                       '--synthetic_test_size', '32', '--num_classes', '10', '--init_channels', '4', '--layers', '5',
                       '--batch_size', '32', '--device', 'cpu', '--report_freq', '1000', '--search_space', 's3',
                       '--epochs', '24', '--arch_learning_rate', '3e-2', '--hessian_eigenvalue', '2',
                       '--early_stop', '--es_start_epoch', '2', '--exp_path', 'search'])
    rows = metrics(in_tmp / 'search')
    stopped, kept = rows[-1]['epoch'], rows[-1]['early_stop_keeps']
    assert stopped < 23 and kept == stopped - 12, 'early stopping ended the search before its last epoch'
    assert mean_skip_weight(rows[stopped]) > mean_skip_weight(rows[0]) + 0.03, 'skip_connect gained weight'
    eigenvalues = [row['hessian_eigenvalue'] for row in rows if 'hessian_eigenvalue' in row]
    assert eigenvalues[-1] > 1.5 * eigenvalues[0], 'the curvature rose'
    assert mean_skip_weight(rows[kept]) < mean_skip_weight(rows[stopped]), 'the cell kept is from before the drift'
