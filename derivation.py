"""Deriving a cell from soft architecture weights, by one rule wherever a cell is derived (the genotype, the
hard discretization of DADARTS, the cost of the derived cell, FairDARTS's report, NAS-Bench-201): each edge
takes its op of largest weight (`none` left out in the DARTS cell), each node of the DARTS cell its two
strongest inputs, and a tie goes to the lower index, op or edge. Also P-DARTS's cap on skip connections.

best_ops and strongest_edges are tensor arithmetic on the weights' device: they never read a value back to
the host, so a search step may call them."""
import torch

from genotypes import ATTENTION_PRIMITIVES

INPUTS_PER_NODE = 2  # a derived DARTS cell keeps two inputs per node


def node_slices(steps):
    """The edges of each node of the DARTS cell: node i owns edges [sum_{j<i} (j + 2), sum_{j<=i} (j + 2))."""
    slices, start = [], 0
    for node in range(steps):
        slices.append(slice(start, start + node + 2))
        start += node + 2
    return slices


def best_ops(ops, none_index=None):
    """Each edge's op of largest weight, `none` (its column, when given) left out; ties to the lower index
    (argmax returns the first maximum)."""
    candidates = ops.detach()
    if none_index is not None:
        none = torch.arange(ops.size(1), device=ops.device) == none_index
        candidates = candidates.masked_fill(none, float('-inf'))
    return candidates.argmax(dim=1)


def strongest_edges(strength, slices, inputs=INPUTS_PER_NODE):
    """[nodes, inputs]: the edges of each node's `inputs` largest strengths, strongest first; ties to the
    lower edge index."""
    return torch.stack([strength[rows].detach().sort(descending=True, stable=True).indices[:inputs] + rows.start
                        for rows in slices])


def best_attention(weights):
    """The strongest attention of a bottleneck mixture; Identity means no bottleneck."""
    if weights is None:
        return ''
    name = ATTENTION_PRIMITIVES[int(weights.argmax())]
    return '' if name == 'Identity' else name


def none_column(op_names):
    return op_names.index('none') if 'none' in op_names else None


def edge_strength(weights, op_names):
    """DARTS's strength of every edge: its best non-`none` op weight, times its edge weight if it has one. The
    product is taken in the weights' precision, as PC-DARTS's genotype() multiplies its float32 arrays, so that
    two edges whose strengths are equal there tie, and the lower index wins."""
    ops = weights.ops.detach()
    best = ops.gather(1, best_ops(ops, none_column(op_names)).unsqueeze(1)).squeeze(1)
    return best if weights.edges is None else best * weights.edges.detach()


def derive_cell(weights, op_names, steps, strength):
    """[((op, input[, attention]), edge), ...] two per node: the node's two strongest edges, and on each its
    best non-`none` op (and its attention, or second op, when searched)."""
    none_index = none_column(op_names)
    ops = best_ops(weights.ops, none_index).tolist()
    seconds = best_ops(weights.second, none_index).tolist() if weights.second is not None else None
    attentions = weights.attention.detach().argmax(dim=1).tolist() if weights.attention is not None else None
    entries = []
    slices = node_slices(steps)
    for rows, edges in zip(slices, strongest_edges(strength, slices).tolist()):
        for e in edges:
            if seconds is not None:
                attention = op_names[seconds[e]]
            elif attentions is not None:
                attention = ATTENTION_PRIMITIVES[attentions[e]]
            else:
                attention = ''
            entry = (op_names[ops[e]], e - rows.start)
            entries.append((entry + (attention,) if attention else entry, e))
    return entries


def limit_skips(weights, op_names, steps, max_skip, strength_of):
    """P-DARTS's remedy for skip collapse, as its code applies it (delete_min_sk_prob, keep_1_on,
    keep_2_branches): while the derived cell holds more than `max_skip` skip_connect, the weakest of them (its
    skip weight the lowest) has that weight set to 0 and the whole cell is derived again, so its edge takes
    its next best op and may lose its place to another input of its node. `strength_of(weights)` gives the
    edge strengths. A skip whose edge has no other op left (weight 0: masked by P-DARTS's pruning or decided
    by DARTS-PT) stays. Returns derive_cell's entries."""
    if 'skip_connect' not in op_names:  # S4, or --primitives without it: no skip to cap
        return derive_cell(weights, op_names, steps, strength_of(weights))
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
