"""derivation.py: one rule derives every cell, and every place that derives one agrees with it."""
import numpy as np
import pytest
import torch
from conftest import supernet
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cost
import derivation
import discretization_aware
import methods
import successors
from architecture import Architecture
from model_search_nb201 import SearchNetworkNB201

# Small integers as op parameters: ties between ops and between edges are common, and softmax keeps them.
alphas_of = st.lists(st.integers(0, 3), min_size=14 * 8, max_size=14 * 8)


def reference_cell(ops, edges, steps=4):
    """DARTS's derivation written plainly, for the test: each edge's best non-`none` op (column 0) of the
    lowest index among equals, its strength that op's weight times the edge's weight in float32 (PC-DARTS's
    genotype() multiplies float32 arrays), and per node the two strongest edges, the lower index first among
    equals."""
    best = [max(range(1, len(row)), key=lambda i: (row[i], -i)) for row in ops]
    strength = [np.float32(row[i]) * np.float32(edge) for row, i, edge in zip(ops, best, edges)]
    cell, start = [], 0
    for node in range(steps):
        kept = sorted(range(start, start + node + 2), key=lambda e: (-strength[e], e))[:2]
        cell += [(e, best[e]) for e in kept]
        start += node + 2
    return cell


@pytest.fixture(scope='module')
def darts_net():
    torch.manual_seed(0)
    return supernet(4, 3, 3, image_size=8, edge_norm=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(alphas_of, alphas_of, st.lists(st.integers(0, 2), min_size=14, max_size=14))
def test_every_derivation_of_a_darts_cell_agrees_with_the_rule(darts_net, normal, reduce, betas):
    arch = darts_net
    net = arch.net
    with torch.no_grad():
        net.alphas_normal.copy_(torch.tensor(normal, dtype=torch.float).view(14, 8))
        net.alphas_reduce.copy_(torch.tensor(reduce, dtype=torch.float).view(14, 8))
        net.betas_normal.copy_(torch.tensor(betas, dtype=torch.float))
        net.betas_reduce.zero_()
    weights = arch.detached_weights()
    derived = {cell: [(edge, net.op_names.index(entry[0])) for entry, edge in entries]
               for cell, entries in arch.derived().items()}
    for cell in ('normal', 'reduce'):
        w = weights[cell]
        assert derived[cell] == reference_cell(w.ops.tolist(), w.edges.tolist())
        hard = discretization_aware.hard_ops(w, net)  # DADARTS's hard discretization, on tensors
        assert sorted(map(tuple, hard.nonzero().tolist())) == sorted(derived[cell])
    assert cost.derived_edges(arch) == derived
    genotype = arch.genotype()
    for cell in ('normal', 'reduce'):
        slices = derivation.node_slices(4)
        node_of = {e: i for i, rows in enumerate(slices) for e in range(rows.start, rows.stop)}
        assert getattr(genotype, cell) == [(net.op_names[op], edge - slices[node_of[edge]].start)
                                           for edge, op in derived[cell]]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 2), min_size=14 * 7, max_size=14 * 7))
def test_fair_darts_reports_on_the_derived_cell(alphas):
    arch = supernet(4, 3, 3, image_size=8, sigmoid_weights=True, primitives='darts_without_none')
    net = arch.net
    fair = next(method for method in arch.methods if isinstance(method, successors.FairDARTS))
    with torch.no_grad():
        net.alphas_normal.copy_(torch.tensor(alphas, dtype=torch.float).view(14, 7))
    weights = arch.detached_weights()
    chosen = [weights[cell].ops[edge, op].item() for cell, pairs in cost.derived_edges(arch).items()
              for edge, op in pairs]
    assert fair.logged(arch) == {'fair_below_threshold': sum(w < 0.85 for w in chosen)}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=6 * 5, max_size=6 * 5))
def test_every_derivation_of_a_nas_bench_201_cell_agrees_with_the_rule(alphas):
    arch = Architecture(SearchNetworkNB201(4, 1, 3, image_size=8), methods.build({}))
    net = arch.net
    with torch.no_grad():
        net.alphas_normal.copy_(torch.tensor(alphas, dtype=torch.float).view(6, 5))
    weights = arch.detached_weights()['normal']
    ops = weights.ops
    best = [max(range(5), key=lambda i: (row[i], -i)) for row in ops.tolist()]  # `none` included
    assert [net.op_names.index(entry[0]) for entry, _ in arch.derived()['normal']] == best
    assert sorted(map(tuple, discretization_aware.hard_ops(weights, net).nonzero().tolist())) == \
        list(enumerate(best))
    assert [net.op_names.index(op) for node in arch.genotype().nodes for op, _ in node] == best
    assert cost.derived_edges(arch) == {'normal': list(enumerate(best))}


def test_ties_go_to_the_lower_index():
    ops = torch.tensor([[0.2, 0.4, 0.4], [0.5, 0.25, 0.25]])
    assert derivation.best_ops(ops, none_index=0).tolist() == [1, 1]
    assert derivation.best_ops(ops).tolist() == [1, 0]
    strength = torch.tensor([0.3, 0.3, 0.1, 0.3, 0.3])
    assert derivation.strongest_edges(strength, derivation.node_slices(2)).tolist() == [[0, 1], [3, 4]]
