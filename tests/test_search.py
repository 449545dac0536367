"""End-to-end searches with train_search.py on the synthetic dataset (CPU), and retraining their result."""
import json
import math
import re

import pytest
import torch
from conftest import load_script, metrics

import checkpoints
import genotypes
import model
import utils

train_search = load_script('train_search')
train = load_script('train')

# 4 classes: chance is 25%.
TINY = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '384', '--synthetic_test_size',
        '64', '--num_classes', '4', '--init_channels', '4', '--layers', '3', '--batch_size', '32',
        '--device', 'cpu', '--report_freq', '1000']


@pytest.mark.slow
def test_first_order_search_writes_a_genotype_that_retrains(in_tmp):
    genotype = train_search.main(TINY + ['--epochs', '3', '--exp_path', 'search'])
    folder = in_tmp / 'search'
    for name in ('log.txt', 'args.json', 'metrics.jsonl', 'checkpoint.pt', 'genotype.json'):
        assert (folder / name).is_file(), name
    rows = metrics(folder)
    assert rows[-1]['valid_top1'] > 40.0 and rows[-1]['train_loss'] < rows[0]['train_loss']
    assert genotypes.parse_genotype(str(folder / 'genotype.json')) == genotype
    assert rows[-1]['genotype'] == genotypes.genotype_to_dict(genotype)
    assert rows[-1]['skip_connect'] == genotypes.count_ops(genotype, 'skip_connect')
    ops = rows[-1]['arch_weights']['normal']['ops']
    assert len(ops) == 14 and all(sum(row) == pytest.approx(1.0) for row in ops)
    log = (folder / 'log.txt').read_text().splitlines()
    assert any('genotype = Genotype(normal=' in line for line in log)
    # One line per cell and parameter (the full matrices stay in metrics.jsonl): every line has its time.
    assert sum('ops (softmax): largest per edge ' in line for line in log) == 2 * 3
    assert all(re.match(r'\d\d/\d\d \d\d:\d\d:\d\d ', line) for line in log)
    final = train.main(['--arch_path', str(folder / 'genotype.json'), '--epochs', '1', '--exp_path', 'eval']
                       + [arg for arg in TINY if arg != '--report_freq' and arg != '1000'])
    assert final['test_top1'] > 50.0, 'the searched cell learns the 4 classes (chance: 25%)'


@pytest.mark.slow
def test_second_order_search_learns(in_tmp):
    train_search.main(TINY + ['--epochs', '2', '--unrolled', '--amp', 'bf16', '--exp_path', 'search'])
    assert metrics(in_tmp / 'search')[-1]['valid_top1'] > 40.0
    log = (in_tmp / 'search' / 'log.txt').read_text()
    assert log.count('precision: the weight step and the validation pass in bfloat16 autocast; the second-order '
                     'architecture gradient in float32 with TF32 off') == 1


@pytest.mark.slow
def test_pc_darts_preset_with_warmup_and_overrides(in_tmp):
    args = TINY + ['--method', 'pc_darts', '--init_channels', '8', '--batch_size', '32', '--epochs', '3',
                   '--warmup_epochs', '1', '--exp_path', 'search']
    train_search.main(args)
    saved = json.loads((in_tmp / 'search' / 'args.json').read_text())
    assert (saved['partial_channels'], saved['edge_norm'], saved['learning_rate'], saved['learning_rate_min'],
            saved['arch_learning_rate']) == (4, True, 0.1, 0.0, 6e-4)
    assert (saved['batch_size'], saved['warmup_epochs']) == (32, 1)  # typed flags beat the preset
    rows = metrics(in_tmp / 'search')
    assert rows[-1]['valid_top1'] > 40.0
    # The architecture stays frozen through the warm-up epoch: epoch 0 ends with the initial weights.
    parser = train_search.build_parser()
    parsed, _, _ = train_search.resolve_arguments(parser, args)
    _, _, info = train_search.data.load_dataset(parsed)
    utils.seed_everything(parsed.seed)
    initial = train_search.build_architecture(parsed, info, parsed.layers, parsed.partial_channels, parsed.max_skip)
    assert rows[0]['arch_weights'] == initial.described_weights()
    assert rows[1]['arch_weights'] != rows[0]['arch_weights']
    assert 'edges' in rows[0]['arch_weights']['normal']


def test_bad_search_arguments_give_one_sentence(in_tmp):
    with pytest.raises(utils.UserError, match='--partial_channels 3 must divide --init_channels 16'):
        train_search.main(['--dataset', 'synthetic', '--partial_channels', '3', '--epochs', '1'])
    with pytest.raises(utils.UserError, match="unknown primitive 'conv_9x9'"):
        train_search.main(['--dataset', 'synthetic', '--primitives', 'none,conv_9x9', '--epochs', '1'])
    with pytest.raises(utils.UserError, match='--train_portion'):
        train_search.main(['--dataset', 'synthetic', '--train_portion', '1.5'])
    with pytest.raises(SystemExit):
        train_search.main(['--method', 'nas'])


# Attention needs 16 channels (reduction ratio 16); one step per epoch keeps these runs short.
ATTENTION = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '64', '--synthetic_test_size',
             '32', '--num_classes', '4', '--init_channels', '16', '--layers', '3', '--batch_size', '32',
             '--epochs', '1', '--device', 'cpu', '--report_freq', '1000']
RETRAIN = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '32',
           '--synthetic_test_size', '32', '--num_classes', '4', '--init_channels', '16', '--layers', '3',
           '--batch_size', '32', '--epochs', '1', '--device', 'cpu', '--auxiliary']


def assert_retrained(genotype, C, auxiliary, final):
    """The retrained weights are those of the evaluation network of exactly this cell, and training stayed finite."""
    checkpoints.load_weights(model.NetworkCIFAR(C, 4, 3, auxiliary, genotype, image_size=16), 'eval/weights.pt')
    assert math.isfinite(final['train_loss']) and math.isfinite(final['test_loss'])


@pytest.mark.slow
@pytest.mark.parametrize('flags', [
    ['--location', 'after_every'], ['--location', 'end'], ['--location', 'after_every_and_end'],
    ['--location', 'mixed_with_operation'], ['--location', 'double_mixed'], ['--method', 'att_darts', '--unrolled'],
    ['--method', 'alpha_darts', '--init_channels', '8', '--warmup_epochs', '0'],
], ids=lambda flags: '-'.join(flag.strip('-') for flag in flags[:2]))
def test_attention_searches_run_and_their_genotypes_retrain(flags, in_tmp):
    genotype = train_search.main(ATTENTION + flags + ['--exp_path', 'search'])
    saved = json.loads((in_tmp / 'search' / 'args.json').read_text())
    if '--method' in flags and flags[1] == 'att_darts':
        assert saved['location'] == 'after_every'
    if '--method' in flags and flags[1] == 'alpha_darts':
        assert (saved['alpha_attention'], saved['partial_channels'], saved['primitives'], saved['edge_norm']) == \
            (True, 4, 'alpha_darts', True)
    assert genotypes.parse_genotype(str(in_tmp / 'search' / 'genotype.json')) == genotype
    final = train.main(RETRAIN + ['--arch_path', 'search/genotype.json', '--exp_path', 'eval'])
    assert_retrained(genotype, 16, True, final)


# The DADARTS seed's five search commands, with train_search.py for search.py and our data flags added.
DADARTS_COMMANDS = [
    '-name some_name -dataset cifar10 -hd_on_weights -workers 4',
    '-name some_name -dataset cifar10 -topk_on_alphas -linear_temperature_increase -linear_temperature_max 200 '
    '-workers 4',
    '-name some_name -dataset cifar10 -topk_on_alphas -topk_on_weights -linear_temperature_increase '
    '-linear_temperature_max 200 -workers 4',
    '-name some_name -dataset cifar10 -dal_on_alphas -workers 4',
    '-name some_name -dataset cifar10 -dal_on_alphas -topk_on_alphas -linear_temperature_increase '
    '-linear_temperature_max 200 -hd_on_weights -workers 4',
]
ONE_STEP = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '64', '--synthetic_test_size',
            '32', '--num_classes', '4', '--init_channels', '4', '--layers', '3', '--batch_size', '32', '--epochs', '2',
            '--device', 'cpu', '--exp_path', 'search']


@pytest.mark.slow
@pytest.mark.parametrize('command', DADARTS_COMMANDS, ids=['hd', 'topk-alphas', 'topk-both', 'dal', 'dadarts'])
def test_dadarts_seed_commands_run(command, in_tmp):
    genotype = train_search.main(command.split() + ONE_STEP)
    rows = metrics(in_tmp / 'search')
    flags = set(command.split())
    if '-linear_temperature_increase' in flags:
        assert [row['temperature'] for row in rows] == [1.0, 100.0]
    if '-dal_on_alphas' in flags:
        assert rows[-1]['alpha_dal'] > 0
    assert genotypes.parse_genotype(str(in_tmp / 'search' / 'genotype.json')) == genotype


@pytest.mark.slow
def test_dadarts_retraining_command_with_a_nested_genotype(in_tmp):
    from test_genotypes import DADARTS_TEXT
    final = train.main(['-name', 'some_name', '-dataset', 'cifar10', '-workers', '4', '-genotype', DADARTS_TEXT]
                       + RETRAIN[:-1] + ['--init_channels', '4', '--exp_path', 'eval'])
    assert_retrained(genotypes.parse_genotype(DADARTS_TEXT), 4, False, final)
    assert "('max_pool_3x3', 0), ('max_pool_3x3', 1), ('max_pool_3x3', 2)" in (in_tmp / 'eval' / 'log.txt').read_text()


def test_method_presets_of_the_discretization_papers():
    parser = train_search.build_parser()
    args, _, _ = train_search.resolve_arguments(parser, ['--method', 'dadarts'])
    assert (args.dal_on_alphas, args.topk_on_alphas, args.linear_temperature_increase, args.linear_temperature_max,
            args.hd_on_weights) == (True, True, True, 200.0, True)
    args, _, _ = train_search.resolve_arguments(parser, ['--method', 'da2s', '--da2s_weight', '0.5'])
    assert (args.da2s, args.da2s_weight, args.da2s_edge_factor, args.da2s_alpha_start) == (True, 0.5, 4.0, 8)


def mean_alpha_entropy(folder):
    state = torch.load(folder / 'checkpoint.pt', weights_only=True)['model']
    probabilities = torch.cat([torch.softmax(state[name], -1) for name in ('alphas_normal', 'alphas_reduce')])
    return -(probabilities * probabilities.log()).sum(-1).mean().item()


@pytest.mark.slow
def test_da2s_and_dal_end_with_sharper_architecture_weights_than_darts(in_tmp):
    """Same seed, data and epochs; a larger architecture learning rate lets a few tiny epochs show it."""
    common = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '192', '--synthetic_test_size',
              '32', '--num_classes', '4', '--init_channels', '4', '--layers', '3', '--batch_size', '32', '--epochs',
              '3', '--device', 'cpu', '--report_freq', '1000', '--arch_learning_rate', '0.1']
    entropy = {}
    for name, flags in (('darts', []), ('dal', ['--dal_on_alphas']), ('da2s', ['--method', 'da2s',
                                                                             '--da2s_alpha_start', '1'])):
        train_search.main(common + flags + ['--exp_path', name])
        entropy[name] = mean_alpha_entropy(in_tmp / name)
    print('mean entropy of softmax(alpha):', entropy)
    assert entropy['dal'] < entropy['darts'] and entropy['da2s'] < entropy['darts']


@pytest.mark.parametrize('argv, warmup, told', [
    (['--method', 'pc_darts', '--epochs', '1'], 0, 'pc_darts freezes the architecture for 15 of its 50 epochs; '
                                                   'this run of 1 keeps it frozen for 0'),
    (['--method', 'pc_darts', '--epochs', '10'], 3, 'this run of 10 keeps it frozen for 3'),
    (['--method', 'alpha_darts', '--epochs', '8'], 2, 'alpha_darts freezes the architecture for 15 of its 80'),
    (['--method', 'pc_darts', '--epochs', '20'], 15, None),  # longer than the warm-up: the paper's setting
    (['--method', 'pc_darts', '--epochs', '5', '--warmup_epochs', '5'], 5, 'warning: the architecture will not train'),
    (['--epochs', '3', '--warmup_epochs', '4'], 4, 'warning: the architecture will not train'),
])
def test_a_short_run_of_a_preset_scales_its_warm_up(argv, warmup, told):
    args, _, notes = train_search.resolve_arguments(train_search.build_parser(), argv)
    assert args.warmup_epochs == warmup
    assert (notes == []) if told is None else (len(notes) == 1 and told in notes[0])


@pytest.mark.slow
def test_a_one_epoch_run_of_a_preset_with_warm_up_still_trains_the_architecture(in_tmp, capsys):
    args = TINY + ['--method', 'pc_darts', '--partial_channels', '2', '--epochs', '1', '--exp_path', 'search']
    train_search.main(args)
    assert 'this run of 1 keeps it frozen for 0' in capsys.readouterr().out
    parsed, _, _ = train_search.resolve_arguments(train_search.build_parser(), args)
    _, _, info = train_search.data.load_dataset(parsed)
    utils.seed_everything(parsed.seed)
    initial = train_search.build_architecture(parsed, info, parsed.layers, parsed.partial_channels,
                                              parsed.max_skip).described_weights()
    moved = metrics(in_tmp / 'search')[0]['arch_weights']
    for cell in ('normal', 'reduce'):
        change = torch.tensor(moved[cell]['ops']) - torch.tensor(initial[cell]['ops'])
        assert change.abs().max() > 1e-4, 'the architecture weights never moved'
