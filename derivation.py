"""Deriving a DARTS cell from soft architecture weights: each edge's best op, each node's two strongest
inputs, and P-DARTS's cap on skip connections."""
import torch

from genotypes import ATTENTION_PRIMITIVES


def best_op(row, op_names, exclude=('none',)):
    candidates = [i for i, name in enumerate(op_names) if name not in exclude]
    return max(candidates, key=lambda i: (row[i].item(), -i))


def best_attention(weights):
    """The strongest attention of a bottleneck mixture; Identity means no bottleneck."""
    if weights is None:
        return ''
    name = ATTENTION_PRIMITIVES[int(weights.argmax())]
    return '' if name == 'Identity' else name


def edge_strength(weights, op_names):
    """DARTS's strength of every edge: its best non-`none` op weight, times its edge weight if it has one."""
    best = torch.stack([row[best_op(row, op_names)] for row in weights.ops]).double()
    return best if weights.edges is None else best * weights.edges.double()


def derive_cell(weights, op_names, steps, strength):
    """[((op, input[, attention]), edge), ...] two per node: the node's two strongest edges, and on each its
    best non-`none` op (and its attention, or second op, when searched)."""
    entries, offset = [], 0
    for node in range(steps):
        rows = range(offset, offset + node + 2)
        for e in sorted(rows, key=lambda e: -strength[e].item())[:2]:
            op = op_names[best_op(weights.ops[e], op_names)]
            if weights.second is not None:
                attention = op_names[best_op(weights.second[e], op_names)]
            elif weights.attention is not None:
                attention = ATTENTION_PRIMITIVES[int(weights.attention[e].argmax())]
            else:
                attention = ''
            entries.append(((op, e - offset, attention) if attention else (op, e - offset), e))
        offset += node + 2
    return entries


def limit_skips(weights, op_names, steps, max_skip, strength_of):
    """P-DARTS's remedy for skip collapse, as its code applies it (delete_min_sk_prob, keep_1_on,
    keep_2_branches): while the derived cell holds more than `max_skip` skip_connect, the weakest of them (its
    skip weight the lowest) has that weight set to 0 and the whole cell is derived again, so its edge takes
    its next best op and may lose its place to another input of its node. `strength_of(weights)` gives the
    edge strengths. A skip whose edge has no other op left (weight 0: masked by P-DARTS's pruning or decided
    by DARTS-PT) stays. Returns derive_cell's entries."""
    skip = op_names.index('skip_connect')
    others = [j for j, name in enumerate(op_names) if name not in ('none', 'skip_connect')]
    ops = weights.ops.clone()
    while True:
        current = weights.replace(ops=ops)
        entries = derive_cell(current, op_names, steps, strength_of(current))
        skips = [edge for entry, edge in entries if entry[0] == 'skip_connect']
        replaceable = [edge for edge in skips if any(ops[edge][j] > 0 for j in others)]
        if len(skips) <= max_skip or not replaceable:
            return entries
        ops[min(replaceable, key=lambda edge: (ops[edge][skip].item(), edge)), skip] = 0.0
