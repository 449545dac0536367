"""selection.py: DARTS-PT's decisions from masked accuracies, its rounds kept in the op masks, and the
selection after a search and on a finished search folder."""
import logging

import pytest
import torch
from conftest import load_script, metrics, supernet

import genotypes
from architecture import Architecture
import methods
import model_search_nb201
import selection
from utils import UserError

train_search = load_script('train_search')

TINY = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '128', '--synthetic_test_size',
        '32', '--num_classes', '4', '--init_channels', '4', '--layers', '2', '--batch_size', '32', '--device', 'cpu',
        '--report_freq', '1000']
LOGGER = logging.getLogger('test')


def importance_accuracy(preferred, importance):
    """A stand-in for the validation accuracy: the summed importance of the (edge, op) pairs in
    `preferred` whose weight is still above zero in the normal cell, so masking a preferred op hurts."""
    def accuracy_of(weights):
        ops = weights['normal'].ops
        return sum(importance[edge] for edge, op in preferred.items() if ops[edge, op] > 0)
    return accuracy_of


def test_darts_pt_changes_the_cell_when_masking_says_so():
    arch = supernet(4, 3, 3, image_size=8)
    net = arch.net
    with torch.no_grad():
        net.alphas_normal.copy_(torch.arange(8.0).repeat(14, 1))  # DARTS takes dil_conv_5x5 everywhere
    darts_cell = arch.genotype()
    assert {op for op, _ in darts_cell.normal} == {'dil_conv_5x5'}
    preferred = {edge: 1 + edge % 6 for edge in range(14)}  # max_pool_3x3 ... dil_conv_3x3, never none
    importance = [1.0, 2.0, 5.0, 1.0, 4.0, 3.0, 1.0, 2.0, 6.0, 5.0, 1.0, 2.0, 3.0, 4.0]
    accuracy_of = importance_accuracy(preferred, importance)
    for round_index in range(selection.rounds(net)):
        assert selection.rounds_done(net) == round_index
        selection.decide(net, round_index, 0, arch.weights, accuracy_of, LOGGER)
    assert selection.rounds(net) == selection.rounds_done(net) == 14 + 3
    # Each node keeps its two most important inputs, each with the op whose removal hurt.
    kept = {0: (0, 1), 2: (2, 4), 5: (5, 8), 9: (9, 13)}
    expected = [(net.op_names[preferred[edge]], edge - start) for start, edges in kept.items() for edge in edges]
    cell = arch.genotype()
    assert sorted(cell.normal) == sorted(expected) and cell.normal != darts_cell.normal


def test_an_op_round_keeps_the_op_whose_removal_hurts_most_and_never_none():
    arch = supernet(4, 3, 3, image_size=8)
    net = arch.net
    scores = []

    def accuracy_of(weights):
        ops = weights['reduce'].ops
        removed = [op for op in range(8) if ops[:, op].eq(0).any()]
        scores.append(removed)
        return 10.0 if removed != [6] else 1.0  # without dil_conv_3x3 the supernet fails
    selection.decide(net, 0, 3, arch.weights, accuracy_of, LOGGER)
    reduce = net.op_mask('reduce')
    decided = [edge for edge in range(14) if reduce[edge].sum() == 1]
    assert len(decided) == 1 and reduce[decided[0]].nonzero().flatten().tolist() == [6]
    assert [0] not in scores  # none is never a candidate in the DARTS cell


def test_nas_bench_201_rounds_decide_ops_only_and_may_keep_none():
    net = model_search_nb201.SearchNetworkNB201(4, 1, 4)
    arch = Architecture(net, methods.Methods())
    assert selection.rounds(net) == 6 and selection.epochs(net, 5) == 26

    def accuracy_of(weights):  # without none the supernet fails
        return 1.0 if weights['normal'].ops[:, 0].eq(0).any() else 5.0
    for round_index in range(6):
        selection.decide(net, round_index, 0, arch.weights, accuracy_of, LOGGER)
    assert arch.genotype() == genotypes.parse_genotype('|none~0|+|none~0|none~1|+|none~0|none~1|none~2|')


def test_the_decision_epochs_skip_a_round_the_masks_already_hold():
    arch = supernet(4, 3, 3, image_size=8)
    net = arch.net
    calls = []
    objective = type('Objective', (), {'arch_weights': lambda self, phase: arch.weights()})()
    on_epoch = selection.decision_epochs(net, 2, 0, objective, lambda weights: calls.append(1) or 1.0, LOGGER)
    assert on_epoch(0) == (True, {'pt_decisions': 1}) and calls
    calls.clear()
    assert on_epoch(0) == (True, {'pt_decisions': 1}) and not calls  # a run resumed within epoch 0
    assert on_epoch(1) == (True, {'pt_decisions': 1}) and not calls
    assert on_epoch(2) == (True, {'pt_decisions': 2}) and calls


@pytest.mark.slow
def test_pt_after_a_search_equals_pt_on_the_finished_folder(in_tmp):
    pt = ['--selection', 'pt', '--pt_interval', '1', '--pt_batches', '1']
    whole = train_search.main(TINY + ['--epochs', '1', '--exp_path', 'whole'] + pt)
    train_search.main(TINY + ['--epochs', '1', '--exp_path', 'later', '--primitives', 'darts_without_none'])
    later = train_search.main(['--resume', 'later'] + pt)
    assert later == whole == genotypes.parse_genotype(str(in_tmp / 'later' / 'genotype.json'))
    rows = metrics(in_tmp / 'later')
    assert [row['stage'] for row in rows] == [0] + ['pt'] * 17 and rows[-1]['pt_decisions'] == 17
    state = torch.load(in_tmp / 'later' / 'checkpoint.pt', weights_only=True)['model']
    for cell in ('normal', 'reduce'):
        assert (state[f'op_mask_{cell}'].sum(dim=1) <= 1).all()
        assert (state[f'op_mask_{cell}'].any(dim=1).sum()) == 8  # two inputs for each of the four nodes
    assert 'DARTS-PT round 17: reduce node' in (in_tmp / 'later' / 'log.txt').read_text()


@pytest.mark.slow
def test_fixed_alpha_keeps_the_initial_architecture_through_the_search_and_the_selection(in_tmp):
    """DARTS-PT's 'blank' supernet: Adam never steps the architecture, in the search or the fine-tuning, and the
    cell is DARTS-PT's decisions."""
    pt = ['--selection', 'pt', '--pt_interval', '1', '--pt_batches', '1', '--fix_alpha']
    cell = train_search.main(TINY + ['--epochs', '2', '--exp_path', 'run'] + pt)
    checkpoint = torch.load(in_tmp / 'run' / 'checkpoint.pt', weights_only=False)
    assert checkpoint['optimizers']['alpha']['state'] == {}
    rows = metrics(in_tmp / 'run')
    assert [row['stage'] for row in rows] == [0, 0] + ['pt'] * 17
    for cell_type in ('normal', 'reduce'):
        assert torch.allclose(torch.tensor(rows[0]['arch_weights'][cell_type]['ops']),
                              torch.softmax(checkpoint['model'][f'alphas_{cell_type}'], -1), atol=1e-4)
    assert cell == genotypes.parse_genotype(str(in_tmp / 'run' / 'genotype.json'))
    assert "--fix_alpha: the architecture weights keep their initial values" in (in_tmp / 'run' / 'log.txt').read_text()


def test_fixed_alpha_without_darts_pt_is_refused(in_tmp):
    with pytest.raises(UserError, match='so DARTS-PT chooses the cell: give --selection pt too'):
        train_search.main(TINY + ['--fix_alpha', '--exp_path', 'refused'])
    assert not (in_tmp / 'refused').exists()


@pytest.mark.slow
def test_a_checkpoint_of_the_selection_names_the_last_stage_and_one_of_the_old_form_still_resumes(in_tmp):
    pt = ['--selection', 'pt', '--pt_interval', '1', '--pt_batches', '1']
    cell = train_search.main(TINY + ['--epochs', '1', '--exp_path', 'run'] + pt)
    checkpoint = torch.load(in_tmp / 'run' / 'checkpoint.pt', weights_only=False)
    assert (checkpoint['stage'], checkpoint['selecting']) == (0, True)
    del checkpoint['selecting']
    torch.save({**checkpoint, 'stage': 'pt'}, in_tmp / 'run' / 'checkpoint.pt')  # as written before 2026-11-28
    assert train_search.main(['--resume', 'run'] + pt) == cell


def test_pt_refuses_a_longer_resumed_run_and_a_resume_without_it(in_tmp):
    train_search.main(TINY + ['--epochs', '1', '--exp_path', 'done'])
    with pytest.raises(UserError, match='--epochs cannot change'):
        train_search.main(['--resume', 'done', '--selection', 'pt', '--epochs', '2'])
    checkpoint = torch.load(in_tmp / 'done' / 'checkpoint.pt', weights_only=False)
    torch.save({**checkpoint, 'stage': 'pt'}, in_tmp / 'done' / 'checkpoint.pt')
    with pytest.raises(UserError, match='resume it with --selection pt'):
        train_search.main(['--resume', 'done'])


def test_the_reduction_cell_is_measured_with_the_normal_cells_decision_in_place():
    """ruocwang/darts-pt 4ec3149, sota/cnn/projection.py pt_project: project_op on the normal cell,
    model.project_op, then project_op on the reduction cell, whose measurements mix the normal cell as
    projected (weights_dict holds only the cell type measured)."""
    arch = supernet(4, 3, 3, image_size=8)
    net = arch.net
    decided_normal_edges = []

    def accuracy_of(weights):
        decided_normal_edges.append(int(((weights['normal'].ops > 0).sum(dim=1) == 1).sum()))
        return 0.0
    selection.decide(net, 0, 0, arch.weights, accuracy_of, LOGGER)
    assert decided_normal_edges == [0] * 7 + [1] * 7  # 7 candidates (never none) per cell type


def test_the_methods_schedules_hold_their_end_values_while_darts_pt_fine_tunes():
    """darts-pt 4ec3149, sota/cnn/train_search.py: pt_project(..., args.epsilon_alpha), SDARTS's final radius; the
    other methods keep their last search epoch's values instead of starting their schedules again."""
    from architect import SearchObjective
    arch = supernet(4, 3, 3, image_size=8, sdarts='rs', beta_decay_weight=50.0, auxiliary_skip=1.0)
    objective = SearchObjective(arch)
    objective.hold_at_end(50)
    held = {name: value for method in arch.methods for name, value in method.logged(arch).items()}
    assert held == pytest.approx({'sdarts_epsilon': 0.3, 'beta_decay_weight': 50 * 49 / 100, 'auxiliary_skip': 0.02})


@pytest.mark.slow
def test_darts_pt_fine_tunes_with_the_search_schedules_held(in_tmp):
    train_search.main(TINY + ['--search_space', 'nas_bench_201', '--method', 'sdarts_rs', '--epochs', '2',
                              '--selection', 'pt', '--pt_interval', '1', '--exp_path', 'run'])
    rows = metrics(in_tmp / 'run')
    assert [row['sdarts_epsilon'] for row in rows[:2]] == pytest.approx([0.03, 0.165])
    assert [row['stage'] for row in rows[2:]] == ['pt'] * 6 and all(row['sdarts_epsilon'] == 0.3 for row in rows[2:])
