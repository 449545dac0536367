"""cost.py: per-op costs of the supernet's edges, the expected and the derived cell's cost, the latency table
that bench.py measures, and a penalty that makes the search choose cheaper cells."""
import json

import pytest
import torch
from conftest import load_script, metrics, supernet

import cost
import methods
from architecture import Architecture
from model_search_nb201 import SearchNetworkNB201
from operations import OPS
from utils import UserError

train_search = load_script('train_search')
bench = load_script('bench')

TINY = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '128', '--synthetic_test_size',
        '32', '--num_classes', '4', '--init_channels', '4', '--layers', '3', '--batch_size', '32', '--device', 'cpu',
        '--report_freq', '1000', '--epochs', '2']


def nb201(**flags):
    return Architecture(SearchNetworkNB201(4, 1, 10, image_size=16), methods.build({'cost_penalty': 1.0, **flags}))


def test_params_are_those_of_the_evaluation_op_summed_over_the_cells_of_a_type():
    arch = supernet(4, 3, 3, image_size=16, partial_channels=2, cost_penalty=1.0)
    net = arch.net
    tables = cost.cost_tables(arch, 'params')
    ops = net.op_names
    params = lambda name, C, stride: sum(p.numel() for p in OPS[name](C, stride, True).parameters()) / 1e6  # noqa: E731
    # Cells: normal at C = 4, then two reductions at C = 8 and 16 (full channels, whatever K searches).
    assert tables['normal'][0, ops.index('sep_conv_3x3')] == pytest.approx(params('sep_conv_3x3', 4, 1))
    assert tables['reduce'][0, ops.index('dil_conv_5x5')] == pytest.approx(
        params('dil_conv_5x5', 8, 2) + params('dil_conv_5x5', 16, 2))
    assert tables['reduce'][0, ops.index('skip_connect')] > 0, 'a stride-2 skip is a FactorizedReduce'
    skips_from_nodes = [4, 7, 8, 11, 12, 13]  # identity: stride 1 even in a reduction cell
    assert tables['reduce'][skips_from_nodes, ops.index('skip_connect')].abs().max() == 0
    assert tables['normal'][:, ops.index('skip_connect')].abs().max() == 0
    assert all(table[:, ops.index('none')].abs().max() == 0 for table in tables.values())


def test_flops_of_a_1x1_convolution_are_twice_its_multiply_adds():
    arch = nb201()
    net = arch.net
    table = cost.cost_tables(arch, 'flops')['normal']
    # Stages at C = 4, 8, 16 and 16x16, 8x8, 4x4: 2 * C * C * H * W = 8192 FLOPs in every stage's cell.
    assert table[:, net.op_names.index('nor_conv_1x1')].tolist() == pytest.approx([3 * 8192 / 1e6] * 6)
    assert table[:, net.op_names.index('avg_pool_3x3')].abs().max() == 0


def test_expected_and_derived_cost_follow_the_architecture_weights():
    arch = nb201()
    net = arch.net
    penalty = arch.methods[0]
    conv = net.op_names.index('nor_conv_1x1')
    with torch.no_grad():
        net.alphas_normal.zero_()
        net.alphas_normal[:, conv] = 30.0  # every edge chooses nor_conv_1x1, with weight 1
    per_edge = cost.cost_tables(arch, 'params')['normal'][0, conv].item()
    assert penalty.logged(arch) == {'expected_params': pytest.approx(6 * per_edge),
                                   'derived_params': pytest.approx(6 * per_edge)}
    assert penalty.regularisers('alpha', arch)['params_cost'].item() == pytest.approx(6 * per_edge)
    with torch.no_grad():
        net.alphas_normal.zero_()
    uniform = cost.cost_tables(arch, 'params')['normal'].sum().item() / 5
    assert penalty.logged(arch)['expected_params'] == pytest.approx(uniform)
    assert penalty.regularisers('weights', arch) == {}


def test_the_derived_darts_cell_costs_its_chosen_ops():
    arch = supernet(4, 3, 3, image_size=16, cost_penalty=1.0)
    net = arch.net
    penalty = arch.methods[0]
    tables = cost.cost_tables(arch, 'params')
    genotype = arch.genotype()
    expected = 0
    for cell in ('normal', 'reduce'):
        entries = getattr(genotype, cell)
        for k in range(4):
            for op, source in entries[2 * k:2 * k + 2]:
                expected += tables[cell][k * (k + 3) // 2 + source, net.op_names.index(op)].item()
    assert penalty.logged(arch)['derived_params'] == pytest.approx(expected)


def test_latency_needs_a_table_that_has_every_op(tmp_path):
    with pytest.raises(UserError, match=r'--cost latency needs --latency_table FILE; measure one with: python bench'):
        methods.build({'cost_penalty': 1.0, 'cost': 'latency'})
    path = tmp_path / 'latency.json'
    with pytest.raises(UserError, match='no such file'):
        nb201(cost='latency', latency_table=str(path)).methods[0].logged(None)
    path.write_text(json.dumps({'ops': {'skip_connect C4 s1 16x16': 0.01}}))
    arch = nb201(cost='latency', latency_table=str(path))
    with pytest.raises(UserError, match=r'the latency table has no time for nor_conv_1x1 C4 s1 16x16; measure'):
        arch.methods[0].logged(arch)
    path.write_text('{"rows": []}')
    with pytest.raises(UserError, match='is not a table written by bench.py --latency_table'):
        nb201(cost='latency', latency_table=str(path)).methods[0].logged(arch)


def test_bench_measures_the_latency_table_that_a_search_reads(in_tmp, capsys):
    flags = ' '.join(TINY[:TINY.index('--device')] + ['--search_space', 'nas_bench_201', '--layers', '1'])
    table = bench.main(['--latency_table', 'latency.json', '--search_flags', flags, '--steps', '2', '--warmup', '0',
                        '--device', 'cpu'])
    assert 'wrote latency.json: 12 ops' in capsys.readouterr().out  # 4 ops (not none) in each of 3 stages
    saved = json.loads((in_tmp / 'latency.json').read_text())
    assert saved['ops'] == table and saved['unit'] == 'ms' and all(ms > 0 for ms in table.values())
    arch = nb201(cost='latency', latency_table='latency.json')
    net = arch.net
    conv = net.op_names.index('nor_conv_3x3')
    expected = sum(table[f'nor_conv_3x3 C{4 * 2 ** s} s1 {16 // 2 ** s}x{16 // 2 ** s}'] for s in range(3))
    assert arch.methods[0]._tables(arch)['normal'][0, conv].item() == pytest.approx(expected)


def convolutions(folder):
    genotype = json.loads((folder / 'genotype.json').read_text())
    return sum('conv' in entry[0] for cell in ('normal', 'reduce') for entry in genotype[cell])


@pytest.mark.slow
def test_a_strong_params_penalty_chooses_fewer_convolutions_on_the_same_seed(in_tmp):
    train_search.main(TINY + ['--exp_path', 'free'])
    train_search.main(TINY + ['--exp_path', 'penalised', '--cost_penalty', '1000'])
    assert convolutions(in_tmp / 'penalised') < convolutions(in_tmp / 'free')
    rows = metrics(in_tmp / 'penalised')
    assert rows[-1]['derived_params'] < rows[0]['derived_params']
    assert 'expected_params' not in metrics(in_tmp / 'free')[0]
