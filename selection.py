"""DARTS-PT (Wang et al., ICLR 2021): choose the cell by how much each candidate matters to the supernet,
not by its architecture weight.

After the search the supernet keeps training, its weights at a tenth of the search's learning rate held
constant and its architecture as before, and every --pt_interval epochs one decision is made in each cell
type. First the op rounds: an edge not yet decided, picked at random, keeps the op whose removal (its
weight set to 0, the others left as they are) lowers the validation accuracy most. Then, in the DARTS
cell, the node rounds: a node with more than two inputs drops, one at a time, the input whose removal
lowers the accuracy least, until two remain. Each decision is written into the supernet's op masks, so the
derived cell is the decisions, and a resumed run knows from the masks which rounds are done.
"""
import torch

import loop
import spaces
from successors import NB201_DARTS_OF_SDARTS
from utils import UserError, bounded

OPTIONS = ('darts', 'pt')
# The search before DARTS-PT's selection as its code runs it (ruocwang/darts-pt 4ec3149): in DARTS's space that of
# sota/cnn/train_search.py, on space s5 of sota/cnn/spaces.py (no `none`); on NAS-Bench-201 that of
# nasbench201/train_search.py, SDARTS's settings; on RobustDARTS's S1-S4 (exp_scripts/darts-sota.sh --space s1..s4)
# DARTS's settings, the space's ops. They rank above the search space's defaults and below a method preset's.
SEARCH_DEFAULTS = {'darts': dict(primitives='darts_without_none'), 'nas_bench_201': NB201_DARTS_OF_SDARTS,
                   **{space: {} for space in spaces.SPACES}}


def search_defaults(selection, search_space):
    return SEARCH_DEFAULTS[search_space] if selection == 'pt' else {}


def add_arguments(parser):
    group = parser.add_argument_group('selection of the final cell (DARTS-PT)')
    group.add_argument('--selection', choices=OPTIONS, default='darts',
                       help="darts: the cell of the largest architecture weights; pt: DARTS-PT's perturbation-based "
                            'selection after the search (also on a finished search: --resume FOLDER --selection pt)')
    group.add_argument('--pt_interval', type=bounded(int, 1), default=5,
                       help='epochs of fine-tuning between two DARTS-PT decisions (DARTS-PT: 5)')
    group.add_argument('--pt_batches', type=bounded(int, 0), default=0,
                       help='validation batches that measure each DARTS-PT candidate (0: the whole validation half)')
    group.add_argument('--fix_alpha', action='store_true',
                       help="DARTS-PT's fixed-alpha supernet (its code's 'blank' method): the architecture weights "
                            'keep their initial values through the search and the fine-tuning; needs --selection pt')


def check_arguments(selection, fix_alpha):
    if fix_alpha and selection != 'pt':
        raise UserError('--fix_alpha leaves the architecture weights where they start, so DARTS-PT chooses the cell: '
                        'give --selection pt too')


def choosable_nodes(net):
    """The edge slices of the nodes whose inputs DARTS-PT chooses: in the DARTS cell those with more than
    two inputs; NAS-Bench-201's cell keeps every edge."""
    return [rows for rows in net.node_slices() if rows.stop - rows.start > 2] if net.chooses_edges else []


def rounds(net):
    return net.num_edges + len(choosable_nodes(net))


def rounds_done(net):
    """Decisions already in the masks (every cell type decides in step, so the first one tells)."""
    mask = net.op_mask(net.cell_types[0])
    if any(mask[rows].any(dim=1).sum() == 2 for rows in choosable_nodes(net)):
        return net.num_edges + sum(int(mask[rows].any(dim=1).sum() == 2) for rows in choosable_nodes(net))
    return int((mask.sum(dim=1) == 1).sum())


def epochs(net, interval):
    """Fine-tuning epochs, as DARTS-PT counts them: decisions at epochs 0, interval, 2 interval, ..., the
    last one at the start of the last epoch."""
    return interval * (rounds(net) - 1) + 1


def candidates(net, cell, edge):
    """The ops an op round compares on `edge`: the remaining ones, without `none` in the DARTS cell (whose
    derivation never takes it)."""
    remaining = net.op_mask(cell)[edge].nonzero().flatten().tolist()
    return [op for op in remaining if not (net.chooses_edges and op == net.none_index)]


def _without(weights, cell, rows, ops=None):
    """`weights` with the ops `ops` (all of them when None) of the edges `rows` of one cell type at 0."""
    changed = weights[cell].ops.clone()
    if ops is None:
        changed[rows] = 0
    else:
        changed[rows, ops] = 0
    return {**weights, cell: weights[cell].replace(ops=changed)}


def decide(net, round_index, seed, weights_of, accuracy_of, logger):
    """Make round `round_index`'s decision in every cell type, one after the other. `weights_of()` gives the
    search's evaluation weights, asked again for each cell type so that the reduction cell is measured with
    the normal cell's decision in place, as DARTS-PT's code does; `accuracy_of(weights)` is the validation
    accuracy of the supernet mixing with them."""
    generator = torch.Generator().manual_seed(seed * 100003 + round_index)
    for cell in net.cell_types:
        weights = weights_of()
        mask = net.op_mask(cell).clone()
        if round_index < net.num_edges:
            open_edges = [e for e in range(net.num_edges) if mask[e].sum() > 1]
            edge = open_edges[int(torch.randint(len(open_edges), (1,), generator=generator))]
            scores = {op: accuracy_of(_without(weights, cell, edge, op)) for op in candidates(net, cell, edge)}
            chosen = min(scores, key=scores.get)
            mask[edge] = False
            mask[edge, chosen] = True
            logger.info('DARTS-PT round %d: %s edge %d keeps %s (accuracy without each: %s)', round_index + 1, cell,
                        edge, net.op_names[chosen], ', '.join(f'{net.op_names[op]} {acc:.2f}'
                                                              for op, acc in scores.items()))
        else:
            nodes = [rows for rows in choosable_nodes(net) if mask[rows].any(dim=1).sum() > 2]
            rows = nodes[int(torch.randint(len(nodes), (1,), generator=generator))]
            inputs = [e for e in range(rows.start, rows.stop) if mask[e].any()]
            while len(inputs) > 2:
                scores = {e: accuracy_of(_without(weights, cell, e)) for e in inputs}
                dropped = max(scores, key=scores.get)
                inputs.remove(dropped)
                mask[dropped] = False
            logger.info('DARTS-PT round %d: %s node %d keeps inputs %s', round_index + 1, cell,
                        net.node_slices().index(rows), ', '.join(str(e - rows.start) for e in inputs))
        net.set_op_masks({cell: mask})


def measurer(net, loader, amp_autocast, distributed, max_batches):
    """accuracy_of(weights): the top-1 accuracy on `loader` with BN on batch statistics, as DARTS-PT
    measures its candidates."""
    def accuracy_of(weights):
        return loop.evaluate(net, loader, torch.nn.CrossEntropyLoss(), lambda x: net(x, weights), amp_autocast,
                             distributed, batch_statistics=True, max_batches=max_batches)['top1']
    return accuracy_of


def fine_tuning_optimizer(net, learning_rate, momentum, weight_decay):
    """The fine-tuning SGD, at a constant `learning_rate` (DARTS-PT: a tenth of the search's)."""
    sgd = torch.optim.SGD(net.network_weights(), learning_rate, momentum=momentum, weight_decay=weight_decay)
    return sgd, torch.optim.lr_scheduler.ConstantLR(sgd, factor=1.0, total_iters=0)


def decision_epochs(net, interval, seed, objective, accuracy_of, logger, train_architecture=True):
    """The fine-tuning's begin_epoch for train_search.search_epochs: a round's decisions at the start of every
    `interval`-th epoch, unless the masks hold them already (a resumed run); the architecture keeps training
    if `train_architecture`."""
    def begin_epoch(epoch):
        done = rounds_done(net)
        if epoch % interval == 0 and done == epoch // interval < rounds(net):
            decide(net, done, seed, lambda: objective.arch_weights('eval'), accuracy_of, logger)
            done += 1
        return train_architecture, {'pt_decisions': done}
    return begin_epoch
