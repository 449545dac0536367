"""Cost-aware search: what each candidate op of every edge costs, the expected cost of the cells under the
architecture weights, which joins the architecture loss, and the cost of the derived cell.

An op costs what it costs in the evaluation network (model.py) at the supernet's channels and resolution,
whatever the supernet itself computes (partial channels, affine-free BatchNorm):
  params   its parameters, in millions
  flops    its FLOPs for one image, in millions (a multiply-add counts as 2, as torch's flop counter says)
  latency  its forward time for one image, in milliseconds, read from a table that
           `python bench.py --latency_table FILE` measures on the device at hand
`none` costs nothing. An edge costs the same in every cell of a type only where those cells have the same
channels and resolution, so a cell type's table sums its cells: cost[e, o] = sum over cells of op o on edge e.
"""
import functools
import json
import os

import torch

from methods import Method, register
from model import build_edge_op
from utils import UserError, count_flops, timed, write_json

COSTS = {'params': 'M parameters', 'flops': 'MFLOPs', 'latency': 'ms'}


def op_key(name, channels, stride, height, width):
    """How the latency table names an op: `sep_conv_3x3 C16 s1 32x32`."""
    return f'{name} C{channels} s{stride} {height}x{width}'


def evaluation_op(name, channels, stride, height):
    return build_edge_op(name, channels, stride, stride == 2, height).eval()


def op_cost(kind, name, channels, stride, height, width, latencies=None):
    """The cost of one op at one place (see the module's docstring)."""
    if name == 'none':
        return 0.0
    if kind == 'latency':
        key = op_key(name, channels, stride, height, width)
        if key not in latencies:
            raise UserError(f'the latency table has no time for {key}; measure the ops of this search\'s supernet '
                            f'with: python bench.py --latency_table FILE --search_flags "FLAGS OF THE SEARCH"')
        return latencies[key]
    op = evaluation_op(name, channels, stride, height)
    if kind == 'params':
        return sum(p.numel() for p in op.parameters()) / 1e6
    if not any(True for _ in op.parameters()):
        return 0.0  # pooling and identity: no multiply-adds
    return count_flops(op, (1, channels, height, width)) / 1e6


def cost_tables(arch, kind, latencies=None):
    """{cell type: E x ops tensor}: the cost of each op on each edge, summed over the cells of that type."""
    tables = {cell: torch.zeros(arch.net.num_edges, len(arch.net.op_names)) for cell in arch.net.cell_types}
    cache = {}
    for cell, edge, channels, stride, height, width in arch.net.edge_inputs(arch.weights()):
        for o, name in enumerate(arch.net.op_names):
            key = (name, channels, stride, height, width)
            if key not in cache:
                cache[key] = op_cost(kind, *key, latencies=latencies)
            tables[cell][edge, o] += cache[key]
    return tables


def derived_edges(arch):
    """{cell type: [(edge, op index)]} of the derived cell."""
    return {cell: [(edge, arch.net.op_names.index(entry[0])) for entry, edge in entries]
            for cell, entries in arch.derived().items()}


def read_latency_table(path):
    if not os.path.isfile(path):
        raise UserError(f'--latency_table {path}: no such file; measure one with: python bench.py --latency_table '
                        f'{path}')
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)['ops']
    except (ValueError, KeyError, TypeError):
        raise UserError(f'--latency_table {path} is not a table written by bench.py --latency_table') from None


def measure_latency_table(arch, device, path, steps=20, warmup=5):
    """Time every op of the supernet's edges on `device`, one image at a time, and write the table."""
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    table = {}
    for _, _, channels, stride, height, width in arch.net.edge_inputs(arch.weights()):
        for name in arch.net.op_names:
            key = op_key(name, channels, stride, height, width)
            if name == 'none' or key in table:
                continue
            op = evaluation_op(name, channels, stride, height).to(device)
            x = torch.randn(1, channels, height, width, device=device)
            with torch.no_grad():
                table[key] = timed(functools.partial(op, x), sync, steps, warmup) * 1e3
    write_json(path, {'device': str(device), 'batch_size': 1, 'unit': 'ms', 'ops': table})
    return table


@register
class CostPenalty(Method):
    """Cost-aware search: --cost_penalty times the expected cost of the cells, sum over edges and ops of op
    weight (times edge weight, with edge normalisation) times the op's cost, joins the architecture loss,
    so that the search trades accuracy against parameters, FLOPs or measured latency. Each epoch logs the
    expected cost and the derived cell's."""
    switch = '--cost_penalty'

    def __init__(self, cost_penalty=0.0, cost='params', latency_table=None):
        self.penalty, self.kind, self.latency_path = cost_penalty, cost, latency_table
        if self.penalty > 0 and cost == 'latency' and not latency_table:
            raise UserError('--cost latency needs --latency_table FILE; measure one with: python bench.py '
                            '--latency_table FILE')
        self.tables = None
        self.device_tables = None  # the tables on the architecture's device, copied there once

    @staticmethod
    def add_arguments(parser):
        group = parser.add_argument_group('cost-aware search')
        group.add_argument('--cost_penalty', type=float, default=0.0,
                           help='weight of the expected cost of the cells in the architecture loss (0: off)')
        group.add_argument('--cost', choices=tuple(COSTS), default='params',
                           help='params (millions), flops (millions, per image) or latency (ms, per image, from '
                                '--latency_table)')
        group.add_argument('--latency_table', metavar='PATH',
                           help='per-op latencies measured by: python bench.py --latency_table PATH')

    def active(self):
        return self.penalty > 0

    def _tables(self, arch):
        if self.tables is None:
            latencies = read_latency_table(self.latency_path) if self.kind == 'latency' else None
            self.tables = cost_tables(arch, self.kind, latencies)
        return self.tables

    def expected_cost(self, arch, weights):
        device = next(iter(weights.values())).ops.device
        if self.device_tables is None or next(iter(self.device_tables.values())).device != device:
            self.device_tables = {cell: table.to(device) for cell, table in self._tables(arch).items()}
        total = 0
        for cell, w in weights.items():
            per_edge = (w.ops * self.device_tables[cell]).sum(dim=-1)
            total = total + (per_edge if w.edges is None else per_edge * w.edges).sum()
        return total

    def regularisers(self, phase, arch):
        if phase != 'alpha':
            return {}
        return {f'{self.kind}_cost': self.penalty * self.expected_cost(arch, arch.weights())}

    def logged(self, arch):
        tables = self._tables(arch)
        derived = sum(tables[cell][edge, op].item() for cell, edges in derived_edges(arch).items()
                      for edge, op in edges)
        with torch.no_grad():
            expected = self.expected_cost(arch, arch.weights()).item()
        return {f'expected_{self.kind}': expected, f'derived_{self.kind}': derived}
