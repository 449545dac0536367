"""Drawings of cells (Graphviz) and plots of a search's history (matplotlib), for visualize.py.

The drawing libraries are optional on a GPU server, so each is imported where it is needed, and a missing
one is a user error that says how to install it.
"""
import contextlib
import io
import json
import os

import genotypes
import utils

CELL_FILES = {'normal': 'normal', 'reduce': 'reduction'}
PIP_NAMES = {'graphviz': 'graphviz', 'matplotlib': 'matplotlib', 'PIL': 'pillow'}
STYLE = {'input': 'palegreen', 'node': 'lightsteelblue', 'bottleneck': 'lightsalmon', 'output': 'khaki'}


def require(module):
    """The drawing libraries are optional (a GPU server may lack them), so a missing one is a user error."""
    return utils.optional_import(module, 'drawing', PIP_NAMES[module.split('.')[0]])


@contextlib.contextmanager
def graphviz_dot(consequence):
    """Graphviz's Python package only writes DOT text; the `dot` program draws it and may be absent."""
    graphviz = require('graphviz')
    try:
        yield
    except graphviz.ExecutableNotFound:
        raise utils.UserError(f"Graphviz's `dot` program is not installed, so {consequence}; install it with "
                              f"`apt-get install graphviz`, `brew install graphviz` or `conda install graphviz`") \
            from None


def state_name(index):
    return ('c_{k-2}', 'c_{k-1}')[index] if index < 2 else str(index - 2)


def cell_graph(genotype, cell, title=''):
    """The cell as a left-to-right graph: inputs, intermediate nodes, edges labelled with their op (and the
    attention or second op that follows it), the bottleneck attention, and the concatenated output c_{k}."""
    graphviz = require('graphviz')
    graph = graphviz.Digraph(CELL_FILES[cell], graph_attr={
        'rankdir': 'LR', 'label': title, 'labelloc': 't', 'fontname': 'Helvetica'},
        node_attr={'style': 'filled,rounded', 'shape': 'box', 'fontname': 'Helvetica', 'penwidth': '1.5'},
        edge_attr={'fontname': 'Helvetica', 'fontsize': '11'})
    entries = getattr(genotype, cell)
    for index in range(len(entries) // 2 + 2):
        graph.node(state_name(index), fillcolor=STYLE['input'] if index < 2 else STYLE['node'])
    for position, (op, source, *after) in enumerate(entries):
        graph.edge(state_name(source), str(position // 2), label=''.join([op, *(f'\\n→ {name}' for name in after)]))
    graph.node('c_{k}', fillcolor=STYLE['output'])
    concat_target = 'c_{k}'
    bottleneck = getattr(genotype, f'{cell}_bottleneck')
    if bottleneck:  # Att-DARTS's `end` location: one attention on the concatenated states
        concat_target = 'bottleneck'
        graph.node(concat_target, label=f'concat\\n→ {bottleneck}', fillcolor=STYLE['bottleneck'])
        graph.edge(concat_target, 'c_{k}')
    for index in getattr(genotype, f'{cell}_concat'):
        graph.edge(state_name(index), concat_target, color='gray50')
    return graph


def nb201_graph(genotype, title=''):
    """A NAS-Bench-201 cell as a left-to-right graph: node 0 (the input), nodes 1..n with their edges labelled
    by op (`none` dashed: it passes nothing), and the last node as the output."""
    graphviz = require('graphviz')
    graph = graphviz.Digraph('cell', graph_attr={'rankdir': 'LR', 'label': title, 'labelloc': 't',
                                                 'fontname': 'Helvetica'},
                             node_attr={'style': 'filled,rounded', 'shape': 'box', 'fontname': 'Helvetica',
                                        'penwidth': '1.5'},
                             edge_attr={'fontname': 'Helvetica', 'fontsize': '11'})
    last = len(genotype.nodes)
    for index in range(last + 1):
        graph.node(str(index), fillcolor=STYLE['input'] if index == 0 else STYLE['output'] if index == last
                   else STYLE['node'])
    for node, edges in enumerate(genotype.nodes, start=1):
        for op, source in edges:
            graph.edge(str(source), str(node), label=op, **({'style': 'dashed', 'color': 'gray60'} if op == 'none'
                                                             else {}))
    return graph


def cell_graphs(genotype, title=''):
    """The graphs of a genotype's cells: `normal` and `reduction` for a DARTS genotype, `cell` for NAS-Bench-201."""
    if isinstance(genotype, genotypes.CellNB201):
        return [nb201_graph(genotype, title)]
    return [cell_graph(genotype, cell, title) for cell in CELL_FILES]


def draw_cells(genotype, outdir, file_format, view):
    """A drawing per cell type (`normal` and `reduction`, or NAS-Bench-201's `cell`), each with its graph
    source beside it; returns the paths."""
    graphs = cell_graphs(genotype)
    # The sources come first, so that they are there to render elsewhere when `dot` is missing here.
    written = [graph.save(f'{graph.name}.gv', directory=outdir) for graph in graphs]
    with graphviz_dot(f'the cells could not be drawn (the graph sources are in {outdir})'):
        for graph, source in zip(graphs, list(written)):
            written.append(graph.render(source, directory='', view=view,
                                        outfile=os.path.join(outdir, f'{graph.name}.{file_format}')))
    return written


def load_metrics(exp_dir, flag, writers):
    """The rows of a run folder's metrics.jsonl, for `flag`, which needs a folder that `writers` wrote."""
    path = os.path.join(exp_dir, 'metrics.jsonl')
    if not os.path.isdir(exp_dir):
        raise utils.UserError(f'{exp_dir} is not a folder; {flag} needs the folder a {writers} run wrote')
    if not os.path.isfile(path):
        raise utils.UserError(f'{exp_dir} holds no metrics.jsonl; {flag} needs the folder a {writers} run wrote, '
                              f'after at least one epoch')
    try:
        rows = utils.read_jsonl(path)
    except ValueError as error:
        raise utils.UserError(f'{path} is not valid JSON lines ({str(error)[:80]})') from None
    if not rows:
        raise utils.UserError(f'{path} is empty; {flag} needs at least one finished epoch')
    return rows


def load_history(exp_dir):
    rows = [row for row in load_metrics(exp_dir, '--history', 'train_search.py') if 'arch_weights' in row]
    if not rows:
        raise utils.UserError(f'{exp_dir}/metrics.jsonl holds no architecture weights; it was not written by '
                              f'train_search.py')
    return rows


def edge_panels(n_edges, nb201=False):
    """(row, column, title) per edge, in the supernet's order: node by node, then by input (a DARTS node i
    has i + 2 inputs, a NAS-Bench-201 node i + 1 has i + 1)."""
    panels, row = [], 0
    while len(panels) < n_edges:
        if nb201:
            panels += [(row, source, f'node {row + 1} ← {source}') for source in range(row + 1)]
        else:
            panels += [(row, source, f'node {row} ← {state_name(source)}') for source in range(row + 2)]
        row += 1
    return panels[:n_edges]


# Hollow markers of distinct shapes and a cycle of line styles keep candidates apart where they coincide
# (every op at 1/8 in the first epochs); a small spread along the epoch axis keeps their points apart.
MARKERS = 'osD^vP*X<>ph8dH'


LINE_STYLES = ('-', '--', '-.', ':')


SPREAD = 0.3  # epochs over which the points of one epoch are spread
# NAS-Bench-201's tabulated test accuracies of a search's cells (train_search.py --benchmark).
BENCHMARK_CURVES = {'benchmark_cifar10_test': 'NAS-Bench-201 CIFAR-10 test',
                    'benchmark_cifar100_test': 'NAS-Bench-201 CIFAR-100 test',
                    'benchmark_imagenet16_test': 'NAS-Bench-201 ImageNet16-120 test'}


def epoch_axis(ax, epochs):
    """Integer epoch ticks, and half an epoch of room on either side, from 1 epoch to hundreds."""
    ticker = require('matplotlib.ticker')
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True, min_n_ticks=1, nbins=6))
    ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)


def plot_candidates(ax, epochs, series, labels, colors):
    """One line per candidate, each with its own colour, marker and line style."""
    markevery = max(1, len(epochs) // 12)
    for candidate, (label, values) in enumerate(zip(labels, series)):
        offset = SPREAD * (candidate / max(len(labels) - 1, 1) - 0.5)
        ax.plot([epoch + offset for epoch in epochs], values, color=colors(candidate), label=label,
                marker=MARKERS[candidate % len(MARKERS)], markevery=markevery, fillstyle='none', markersize=4,
                linestyle=LINE_STYLES[candidate % len(LINE_STYLES)], linewidth=1)


def plot_edges(rows, cell, field, labels, path):
    """One panel per edge with every candidate's softmaxed weight over the epochs (the DA2S figure); the
    panels share one legend, as they share their candidates."""
    matplotlib = require('matplotlib')
    figure_module = require('matplotlib.figure')
    epochs = [row['epoch'] for row in rows]
    weights = [row['arch_weights'][cell][field] for row in rows]  # epochs x edges x candidates
    edge_weights = [row['arch_weights'][cell].get('edges') for row in rows] if field == 'ops' else [None]
    nb201 = genotypes.NB201_KEY in rows[-1]['genotype']
    panels = edge_panels(len(weights[0]), nb201)
    n_nodes = panels[-1][0] + 1
    colors = matplotlib.colormaps['tab10' if len(labels) <= 10 else 'tab20']
    # Node i's row holds its i + 2 inputs; the space the top row leaves free holds the legend.
    columns = max(n_nodes + 1, 3)
    height = 1.9 * n_nodes + 0.6
    figure = figure_module.Figure(figsize=(2.4 * columns, height))
    figure.subplots_adjust(left=0.05, right=0.98, bottom=0.5 / height, top=1 - 0.6 / height, hspace=0.45, wspace=0.3)
    first = None
    for edge, (node, source, title) in enumerate(panels):
        ax = figure.add_subplot(n_nodes, columns, node * columns + source + 1, sharex=first,
                                sharey=first if edge_weights[0] is None else None)
        first = first or ax
        plot_candidates(ax, epochs, [[epoch[edge][candidate] for epoch in weights] for candidate in range(len(labels))],
                        labels, colors)
        if edge_weights[0] is not None:
            ax.plot(epochs, [epoch[edge] for epoch in edge_weights], 'k--', linewidth=1.5, label='edge weight')
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_ylim(bottom=0)
        if node == n_nodes - 1:
            ax.set_xlabel('epoch', fontsize=8)
    epoch_axis(first, epochs)
    figure.legend(*first.get_legend_handles_labels(), fontsize=8, loc='upper right')
    name = 'NAS-Bench-201' if nb201 else CELL_FILES[cell]
    figure.suptitle(f'{name} cell: softmax of the {"op" if field == "ops" else field} weights per edge')
    figure.savefig(path, dpi=100)
    return path


def plot_curves(rows, path):
    """Loss and top-1 accuracy per epoch, of the training data and of the held-out data (a search's
    validation half, or a training run's test set)."""
    figure_module = require('matplotlib.figure')
    epochs = [row['epoch'] for row in rows]
    held_out = 'valid' if 'valid_top1' in rows[-1] else 'test'
    figure = figure_module.Figure(figsize=(8, 3.2), layout='constrained')
    for ax, metric, label in zip(figure.subplots(1, 2), ('loss', 'top1'), ('loss', 'top-1 accuracy (%)')):
        for split, marker in (('train', 'o'), (held_out, 's')):
            values = [row.get(f'{split}_{metric}', float('nan')) for row in rows]
            ax.plot(epochs, values, marker=marker, fillstyle='none', markersize=4, linewidth=1,
                    label={'train': 'training', 'valid': 'validation', 'test': 'test'}[split])
        ax.set_xlabel('epoch')
        ax.set_ylabel(label)
        epoch_axis(ax, epochs)
        ax.legend(fontsize=8)
    figure.savefig(path, dpi=100)
    return path


def plot_progress(rows, path):
    """Validation accuracy and the normal cell's skip_connect count, the usual sign of skip collapse; and,
    for a NAS-Bench-201 search with --benchmark, the tabulated test accuracies of each epoch's cell."""
    figure_module = require('matplotlib.figure')
    ticker = require('matplotlib.ticker')
    epochs = [row['epoch'] for row in rows]
    figure = figure_module.Figure(figsize=(6, 3.5), layout='constrained')
    accuracy = figure.subplots()
    accuracy.plot(epochs, [row['valid_top1'] for row in rows], 'o-', color='tab:blue', label='validation top-1')
    for (key, label), marker in zip(BENCHMARK_CURVES.items(), 'v^D'):
        if any(row.get(key) is not None for row in rows):
            accuracy.plot(epochs, [row.get(key) if row.get(key) is not None else float('nan') for row in rows],
                          marker=marker, linestyle=':', fillstyle='none', label=label)
    accuracy.set_xlabel('epoch')
    accuracy.set_ylabel('accuracy (%)', color='tab:blue')
    skips = accuracy.twinx()
    skips.plot(epochs, [row['skip_connect'] for row in rows], 's--', color='tab:red', fillstyle='none',
               label='skip_connect in the normal cell')
    skips.set_ylabel('skip_connect in the normal cell', color='tab:red')
    skips.set_ylim(0, max(row['skip_connect'] for row in rows) + 1)
    skips.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    epoch_axis(accuracy, epochs)
    handles = [line for ax in (accuracy, skips) for line in ax.get_lines()]
    accuracy.legend(handles, [line.get_label() for line in handles], fontsize=8, loc='lower right')
    figure.savefig(path, dpi=100)
    return path


def plot_terms(rows, path):
    """One panel per term the search logged that moves: the methods' regularisers, temperatures, decaying
    coefficients and costs, P-DARTS's skip dropout, DARTS-PT's decisions. None if nothing moves."""
    names = list(dict.fromkeys(name for row in rows for name in row.get('terms', ())))
    series = {name: [row.get(name, float('nan')) for row in rows] for name in names}
    moving = [name for name, values in series.items() if len({value for value in values if value == value}) > 1]
    if not moving:
        return None
    figure_module = require('matplotlib.figure')
    epochs = [row['epoch'] for row in rows]
    figure = figure_module.Figure(figsize=(6, 1.2 + 1.3 * len(moving)), layout='constrained')
    axes = figure.subplots(len(moving), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name, marker in zip(axes, moving, MARKERS):
        ax.plot(epochs, series[name], marker=marker, fillstyle='none', markersize=4, linewidth=1, label=name)
        ax.set_ylabel(name, fontsize=8)
    axes[-1].set_xlabel('epoch')
    epoch_axis(axes[-1], epochs)
    figure.suptitle("the search methods' terms per epoch")
    figure.savefig(path, dpi=100)
    return path


def animate_cells(rows, outdir):
    """A GIF per cell type with the genotype derived after each epoch."""
    image_module = require('PIL.Image')
    written = []
    with graphviz_dot('the cells of each epoch could not be drawn for --animate'):
        graphs = [cell_graphs(genotypes.parse_genotype(json.dumps(row['genotype'])), title=f'epoch {row["epoch"]}')
                  for row in rows]
        for cell in range(len(graphs[0])):
            frames = [image_module.open(io.BytesIO(epoch[cell].pipe(format='png'))).convert('RGB')
                      for epoch in graphs]
            # Every cell has its own drawn size, but a GIF has one canvas: pad the frames on white.
            size = (max(frame.width for frame in frames), max(frame.height for frame in frames))
            canvases = [image_module.new('RGB', size, 'white') for _ in frames]
            for canvas, frame in zip(canvases, frames):
                canvas.paste(frame, (0, 0))
            path = os.path.join(outdir, f'{graphs[0][cell].name}.gif')
            canvases[0].save(path, save_all=True, append_images=canvases[1:], duration=800, loop=0)
            written.append(path)
    return written


def draw_history(rows, outdir, file_format, animate):
    """alphas_{normal,reduce} (and attention_*, second_* when searched), progress, terms (when a term moves),
    and the GIFs."""
    op_names = rows[-1]['op_names']
    written = []
    for cell in rows[-1]['arch_weights']:
        for field, prefix, labels in (('ops', 'alphas', op_names), ('second', 'second', op_names),
                                      ('attention', 'attention', genotypes.ATTENTION_PRIMITIVES)):
            if field in rows[-1]['arch_weights'][cell]:
                path = os.path.join(outdir, f'{prefix}_{cell}.{file_format}')
                written.append(plot_edges(rows, cell, field, labels, path))
    written.append(plot_progress(rows, os.path.join(outdir, f'progress.{file_format}')))
    terms = plot_terms(rows, os.path.join(outdir, f'terms.{file_format}'))
    written += [terms] if terms else []
    if animate:
        written += animate_cells(rows, outdir)
    return written
