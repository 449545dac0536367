"""RobustDARTS's reduced DARTS spaces S1-S4 (Zela et al., ICLR 2020): the DARTS cell with its own candidate
ops on each edge (`--search_space s1|s2|s3|s4`).

The tables follow automl/RobustDARTS 3dec3fe, src/spaces.py; SmoothDARTS (d3dbfed) and DARTS-PT (4ec3149)
search the same sets (their sota/cnn/spaces.py). S1 keeps on each edge the two ops DARTS ranked highest
there; S2 offers sep_conv_3x3 and skip_connect, S3 adds none, S4 pairs sep_conv_3x3 with Gaussian noise.
Edges are numbered as in DARTS: node 0's two inputs, then node 1's three, node 2's four, node 3's five.

The supernet (model_search.Network) offers the union of a space's ops on every edge as columns of alpha
and masks out, from the start, those an edge does not have: the mixture is then the softmax over the
edge's own candidates, as in the authors' code, and the masked ops are never built nor computed.
"""
from operations import DARTS_PRIMITIVES, resolve_primitives
from utils import UserError

SPACES = ('s1', 's2', 's3', 's4')
EDGES = 14  # the DARTS cell's: 4 nodes of 2, 3, 4 and 5 inputs
ORDER = ['none', 'noise'] + DARTS_PRIMITIVES[1:]  # the columns of alpha: the union of a space's ops, in this order

_S1 = {
    'normal': [('skip_connect', 'dil_conv_3x3'), ('skip_connect', 'dil_conv_5x5'),
               ('skip_connect', 'dil_conv_5x5'), ('skip_connect', 'sep_conv_3x3'), ('skip_connect', 'dil_conv_3x3'),
               ('max_pool_3x3', 'skip_connect'), ('skip_connect', 'sep_conv_3x3'), ('skip_connect', 'sep_conv_3x3'),
               ('skip_connect', 'dil_conv_3x3'),
               ('skip_connect', 'sep_conv_3x3'), ('max_pool_3x3', 'skip_connect'), ('skip_connect', 'dil_conv_3x3'),
               ('dil_conv_3x3', 'dil_conv_5x5'), ('dil_conv_3x3', 'dil_conv_5x5')],
    'reduce': [('max_pool_3x3', 'avg_pool_3x3'), ('max_pool_3x3', 'dil_conv_3x3'),
               ('max_pool_3x3', 'avg_pool_3x3'), ('max_pool_3x3', 'avg_pool_3x3'), ('skip_connect', 'dil_conv_5x5'),
               ('max_pool_3x3', 'avg_pool_3x3'), ('max_pool_3x3', 'sep_conv_3x3'), ('skip_connect', 'dil_conv_3x3'),
               ('skip_connect', 'dil_conv_5x5'),
               ('max_pool_3x3', 'avg_pool_3x3'), ('max_pool_3x3', 'avg_pool_3x3'), ('skip_connect', 'dil_conv_5x5'),
               ('skip_connect', 'dil_conv_5x5'), ('skip_connect', 'dil_conv_5x5')],
}
_UNIFORM = {'s2': ('skip_connect', 'sep_conv_3x3'), 's3': ('none', 'skip_connect', 'sep_conv_3x3'),
            's4': ('noise', 'sep_conv_3x3')}


def edge_candidates(space):
    """{'normal': [ops of edge 0, ..., ops of edge 13], 'reduce': [...]} of space s1..s4; None for a space
    whose edges all offer the same ops (darts, nas_bench_201)."""
    if space not in SPACES:
        return None
    if space == 's1':
        return {cell: [list(ops) for ops in edges] for cell, edges in _S1.items()}
    return {cell: [list(_UNIFORM[space]) for _ in range(EDGES)] for cell in ('normal', 'reduce')}


def union(candidates):
    """The ops of any edge of `candidates` (as edge_candidates gives them), in ORDER."""
    present = {op for edges in candidates.values() for ops in edges for op in ops}
    return [op for op in ORDER if op in present]


def ops_per_edge(space, primitives):
    """How many candidates each edge of `space` offers, with --primitives `primitives` where the space takes
    them (S1-S4 offer the same number on every edge)."""
    if space in SPACES:
        return len(edge_candidates(space)['normal'][0])
    return len(resolve_primitives('nas_bench_201' if space == 'nas_bench_201' else primitives))


def primitives_in(space, primitives, typed, default, method):
    """(--primitives to use, notes for the log). S1-S4 give each edge its own ops: a typed --primitives is
    refused, and a method preset's (such as beta_darts's darts_without_none) gives way to them, as the
    successors' own code searches S1-S4."""
    if space not in SPACES:
        return primitives, []
    if typed:
        raise UserError(f'--search_space {space} gives each edge its own candidate ops; leave out --primitives')
    if primitives == default:
        return primitives, []
    return default, [f'--search_space {space} gives each edge its own candidate ops, so --method {method} searches '
                     f'them instead of its primitives {primitives}']
