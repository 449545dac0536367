"""What a search searches: a supernet's architecture parameters and the search methods that turn them into
the weights its edges mix with and into the derived cell.

The supernet (model_search.py) holds the parameters and computes `forward(x, weights)`; it knows no method.
`Architecture` pairs it with its methods (methods.Methods): it registers the parameters the methods ask for,
gives the methods one accessor to every architecture parameter, and asks them for the weights and for the
edges of the derived cell. The search step (architect.SearchObjective) asks it, and the methods, the rest.
"""
import torch
import torch.nn.functional as F

from derivation import edge_strength
from mixed_op import CellWeights


class Architecture:
    """A supernet `net` and its `methods` (methods.Methods, as methods.build gives them; methods.Methods() for
    DARTS alone). The methods' hooks receive it: `arch.net` for the supernet's shape (its cell types, ops and
    node slices), `arch.op_parameters(cell)` for alpha, `arch.parameters_of(method, cell)` for a method's own
    parameters, `arch.weights()` for the soft weights."""

    def __init__(self, net, methods):
        if not hasattr(methods, 'owner'):
            raise TypeError('Architecture takes methods=methods.build(flags), or methods.Methods() for DARTS alone')
        self.net, self.methods = net, methods
        self._method_parameters = {}  # id(method) -> {cell type: {its name: the supernet's attribute}}
        for cell in net.cell_types:
            for method in methods:
                values = method.arch_parameters(self)
                if values:
                    registered = net.add_arch_parameters(cell, values)
                    self._method_parameters.setdefault(id(method), {})[cell] = registered

    def op_parameters(self, cell):
        """The op parameters alpha of a cell type: E x ops."""
        return self.net.op_parameters(cell)

    def parameters_of(self, method, cell):
        """The architecture parameters `method` asked for (its arch_parameters), of a cell type, by its names."""
        names = self._method_parameters.get(id(method), {}).get(cell, {})
        return {name: getattr(self.net, attribute) for name, attribute in names.items()}

    def weights(self):
        """Soft weights of every cell type: the op mixture (DARTS: softmax of the op parameters; a method may
        define its own), over the candidates the supernet's masks leave, the edge weights of a method that has
        them, and the attention mixtures. Always float32."""
        net = self.net
        op_method, edge_method = self.methods.owner('op_weights'), self.methods.owner('edge_weights')
        result = {}
        for cell in net.cell_types:
            mixtures = net.mixture_parameters(cell)
            optional = {field: F.softmax(value.float(), dim=-1) for field, value in mixtures.items()}
            ops = net.mask_ops(cell, op_method.op_weights(self.op_parameters(cell).float()),
                               op_method.op_weights_sum_to_one)
            result[cell] = CellWeights(ops=ops, edges=edge_method.edge_weights(cell, self),
                                       active=net.masked_active()[cell], skip_dropout=net.skip_dropout, **optional)
        return result

    def detached_weights(self):
        """The soft weights on the CPU, for deriving the cell."""
        with torch.no_grad():
            return {cell: CellWeights(**{k: (v.detach().float().cpu() if torch.is_tensor(v) else v)
                                         for k, v in vars(w).items()})
                    for cell, w in self.weights().items()}

    def described_weights(self):
        """Softmaxed architecture weights of every cell type, as nested lists (for logs and metrics.jsonl)."""
        return {cell: {field: value.tolist() for field, value in vars(weights).items() if torch.is_tensor(value)}
                for cell, weights in self.detached_weights().items()}

    def _edge_strength(self, weights, cell):
        """How strongly each edge competes for its node's inputs: DARTS's rule, or the method owning it."""
        strength = edge_strength(weights, self.net.op_names)
        return self.methods.owner('edge_strength').edge_strength(strength, cell, self)

    def derived(self):
        """{cell type: [((op, input[, attention]), edge), ...]}: the derived cell, by the supernet's rule
        (derivation.py) and the methods' edge strengths; what the genotype, the cost of the derived cell and
        FairDARTS's report read."""
        return self.net.derived(self.detached_weights(), self._edge_strength)

    def genotype(self):
        """The discrete cell."""
        weights = self.detached_weights()
        return self.net.genotype(self.net.derived(weights, self._edge_strength), weights)
