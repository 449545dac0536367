"""visualize.py and drawing.py: cell drawings and their graph sources, a search's history, and network sizes."""
import collections
import re

import matplotlib.axes
import pytest
from conftest import load_script, run_script
from PIL import Image

import drawing
import genotypes
import operations
import utils

visualize = load_script('visualize')

SIGNATURES = {'pdf': b'%PDF', 'png': b'\x89PNG\r\n\x1a\n', 'svg': b'<svg'}
# An edge line of the DOT source, e.g. `"c_{k-2}" -> 0 [label="sep_conv_3x3\n→ CBAM"]`.
# Graphviz quotes only the labels that need it.
EDGE_LINE = re.compile(r'^\s*"?([^"\s]+)"?\s*->\s*"?([^"\s]+)"?\s*\[label=(?:"([^"]*)"|(\w+))', re.MULTILINE)


def drawn_edges(source):
    """The labelled edges of a DOT source as a multiset of (input, node, op, attention or '')."""
    edges = collections.Counter()
    for tail, head, quoted, bare in EDGE_LINE.findall(source):
        op, _, after = (quoted or bare).partition('\\n→ ')
        edges[tail, head, op, after] += 1
    return edges


def expected_edges(genotype, cell):
    return collections.Counter((drawing.state_name(source), str(position // 2), op, after[0] if after else '')
                               for position, (op, source, *after) in enumerate(getattr(genotype, cell)))


def genotype_forms(tmp_path, name):
    """The genotype as a published name, a genotype.json file and the Genotype(...) text DARTS logs print."""
    genotype = genotypes.GENOTYPES[name]
    path = tmp_path / f'{name}.json'
    genotypes.save_genotype(genotype, path)
    return {'name': name, 'json': str(path), 'text': genotypes.genotype_repr(genotype)}


def assert_cells_drawn(outdir, genotype, file_format):
    for cell, stem in drawing.CELL_FILES.items():
        picture = (outdir / f'{stem}.{file_format}').read_bytes()
        assert SIGNATURES[file_format] in picture[:1000], (stem, picture[:40])
        source = (outdir / f'{stem}.gv').read_text()
        assert drawn_edges(source) == expected_edges(genotype, cell), stem
        for op, *_ in getattr(genotype, cell):
            assert op in source


@pytest.mark.parametrize('form', ['name', 'json', 'text'])
@pytest.mark.parametrize('file_format', ['pdf', 'png'])
def test_cells_are_drawn_from_every_genotype_form(tmp_path, form, file_format):
    source = genotype_forms(tmp_path, 'DARTS_V2')[form]
    written = visualize.main([source, '--format', file_format, '--outdir', str(tmp_path / 'out')])
    assert sorted(written) == sorted(str(tmp_path / 'out' / f'{stem}.{ext}')
                                     for stem in ('normal', 'reduction') for ext in ('gv', file_format))
    assert_cells_drawn(tmp_path / 'out', genotypes.DARTS_V2, file_format)


@pytest.mark.parametrize('form', ['name', 'json', 'text'])
def test_attention_cells_show_every_attention(tmp_path, form):
    source = genotype_forms(tmp_path, 'Att_DARTS')[form]
    visualize.main([source, '--outdir', str(tmp_path)])
    assert_cells_drawn(tmp_path, genotypes.Att_DARTS, 'pdf')
    for cell, stem in drawing.CELL_FILES.items():
        text = (tmp_path / f'{stem}.gv').read_text()
        assert all(attention in text for _, _, attention in getattr(genotypes.Att_DARTS, cell))


def test_bottleneck_sits_between_the_concatenation_and_the_output(tmp_path):
    darts = genotypes.DARTS_V2
    genotype = genotypes.make_genotype(darts.normal, darts.normal_concat, darts.reduce, darts.reduce_concat,
                                       normal_bottleneck='SE')
    visualize.main([genotypes.genotype_repr(genotype), '--format', 'svg', '--outdir', str(tmp_path)])
    assert_cells_drawn(tmp_path, genotype, 'svg')
    normal = (tmp_path / 'normal.gv').read_text()
    assert 'SE' in normal and re.search(r'bottleneck -> "c_\{k\}"', normal)
    assert all(re.search(rf'\b{node} -> bottleneck', normal) for node in range(4))
    assert 'bottleneck' not in (tmp_path / 'reduction.gv').read_text()


def test_a_search_folder_stands_for_its_genotype(tmp_path):
    genotypes.save_genotype(genotypes.PC_DARTS_cifar, tmp_path / 'genotype.json')
    visualize.main([str(tmp_path), '--format', 'png', '--outdir', str(tmp_path / 'out')])
    assert_cells_drawn(tmp_path / 'out', genotypes.PC_DARTS_cifar, 'png')


def test_missing_dot_is_one_sentence_and_keeps_the_sources(tmp_path, monkeypatch):
    monkeypatch.setenv('PATH', str(tmp_path))
    with pytest.raises(utils.UserError, match='apt-get install graphviz') as error:
        visualize.main(['DARTS_V2', '--outdir', str(tmp_path)])
    assert '\n' not in str(error.value)
    assert (tmp_path / 'normal.gv').is_file() and (tmp_path / 'reduction.gv').is_file()


@pytest.mark.slow
def test_missing_dot_on_the_command_line_exits_2_without_traceback(tmp_path):
    empty = tmp_path / 'bin'
    empty.mkdir()
    process = run_script('visualize', ['DARTS_V2'], tmp_path, env={'PATH': str(empty)})
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error:') and 'apt-get install graphviz' in lines[0]
    assert 'Traceback' not in stderr
    assert (tmp_path / 'normal.gv').is_file()


@pytest.fixture(scope='module')
def search_dir(tmp_path_factory):
    """A real two-epoch search with partial channels, so that metrics.jsonl holds edge weights too."""
    path = tmp_path_factory.mktemp('visualize') / 'search'
    load_script('train_search').main([
        '--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '64', '--synthetic_test_size',
        '32', '--num_classes', '4', '--init_channels', '4', '--layers', '3', '--batch_size', '32', '--epochs', '2',
        '--device', 'cpu', '--partial_channels', '2', '--exp_path', str(path)])
    return path


@pytest.mark.slow
def test_history_figures_and_animation(search_dir, monkeypatch):
    labels = []
    plot = matplotlib.axes.Axes.plot

    def recording_plot(self, *args, **kwargs):
        labels.append(kwargs.get('label'))
        return plot(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, 'plot', recording_plot)
    written = visualize.main(['--history', str(search_dir), '--animate'])
    names = {'alphas_normal.png', 'alphas_reduce.png', 'progress.png', 'normal.gif', 'reduction.gif'}
    assert sorted(written) == sorted(str(search_dir / name) for name in names)
    for name in ('alphas_normal.png', 'alphas_reduce.png', 'progress.png'):
        figure = (search_dir / name).read_bytes()
        assert figure.startswith(SIGNATURES['png']) and len(figure) > 1024, name
    # Every op of every edge, plus the edge weight of PC-DARTS's edge normalisation, in both cell types.
    op_names = utils.read_jsonl(search_dir / 'metrics.jsonl')[0]['op_names']
    assert labels.count('edge weight') == 2 * 14
    assert all(labels.count(op) == 2 * 14 for op in op_names)
    for name in ('normal.gif', 'reduction.gif'):
        assert (search_dir / name).read_bytes().startswith(b'GIF8')
        with Image.open(search_dir / name) as animation:
            assert animation.n_frames == 2


@pytest.mark.slow
def test_history_other_format_and_folder(search_dir, tmp_path, capsys):
    written = visualize.main(['--history', str(search_dir), '--format', 'svg', '--outdir', str(tmp_path)])
    assert sorted(written) == sorted(str(tmp_path / f'{stem}.svg')
                                     for stem in ('alphas_normal', 'alphas_reduce', 'progress'))
    assert all(SIGNATURES['svg'] in open(path, 'rb').read(1000) for path in written)
    assert capsys.readouterr().out.splitlines() == [f'wrote {path}' for path in written]


@pytest.mark.slow
def test_history_plots_the_terms_that_move(tmp_path, monkeypatch):
    labels = []
    plot = matplotlib.axes.Axes.plot
    monkeypatch.setattr(matplotlib.axes.Axes, 'plot', lambda self, *args, **kwargs: labels.append(
        kwargs.get('label')) or plot(self, *args, **kwargs))
    load_script('train_search').main([
        '--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '64', '--synthetic_test_size',
        '32', '--num_classes', '4', '--init_channels', '4', '--stage_layers', '1,2', '--stage_keep', '4',
        '--skip_dropout', '0.5', '--batch_size', '32', '--epochs', '2', '--device', 'cpu', '--gdas',
        '--beta_decay_weight', '50', '--exp_path', str(tmp_path / 'search')])
    written = visualize.main(['--history', str(tmp_path / 'search')])
    assert str(tmp_path / 'search' / 'terms.png') in written
    # GDAS's temperature, beta-DARTS's weight and its term, P-DARTS's skip dropout; each moves.
    assert {'tau', 'beta_decay_weight', 'alpha_beta_decay', 'skip_dropout'} <= set(labels)
    assert (tmp_path / 'search' / 'terms.png').read_bytes().startswith(SIGNATURES['png'])


@pytest.mark.parametrize('epochs', [[0], [0, 1, 2], list(range(600))])
def test_epoch_axes_have_integer_ticks_and_room_from_one_epoch_to_hundreds(epochs):
    figure = drawing.require('matplotlib.figure').Figure()
    ax = figure.subplots()
    ax.plot(epochs, epochs)
    drawing.epoch_axis(ax, epochs)
    low, high = ax.get_xlim()
    ticks = [tick for tick in ax.get_xticks() if low <= tick <= high]
    assert (low, high) == (epochs[0] - 0.5, epochs[-1] + 0.5)
    assert ticks and all(float(tick).is_integer() for tick in ticks) and len(ticks) <= 8


def test_coinciding_candidates_stay_apart():
    """All ten ops of the alpha_darts space at 1/10, as in the first epochs: each keeps its own marker and
    line style, and its points sit apart along the epoch axis."""
    figure = drawing.require('matplotlib.figure').Figure()
    ax = figure.subplots()
    labels = operations.OP_SETS['alpha_darts']
    colors = drawing.require('matplotlib').colormaps['tab10']
    drawing.plot_candidates(ax, [0], [[0.1]] * len(labels), labels, colors)
    lines = ax.get_lines()
    assert len({line.get_marker() for line in lines}) == len({line.get_xdata()[0] for line in lines}) == len(labels)
    assert len({line.get_linestyle() for line in lines}) > 1


@pytest.mark.slow
def test_summary_matches_the_papers_sizes(capsys):
    sizes = visualize.main(['--summary', 'DARTS_V2'])
    cifar100 = visualize.main(['--summary', 'DARTS_V2', '--dataset', 'cifar100'])['cifar100']
    assert list(sizes) == ['cifar10', 'imagenet']
    assert sizes['cifar10']['params_M'] == pytest.approx(3.349342, abs=1e-6)
    assert sizes['imagenet']['params_M'] == pytest.approx(4.718752, abs=1e-6)
    for size in sizes.values():
        assert size['flops'] > 0 and size['multiply_adds'] == size['flops'] // 2
    assert '3.349342' in capsys.readouterr().out
    # Only the classifier grows: 90 more classes, each with 576 weights and a bias.
    assert cifar100['params_M'] - sizes['cifar10']['params_M'] == pytest.approx(90 * 577 / 1e6, abs=1e-9)
    assert cifar100['flops'] - sizes['cifar10']['flops'] == 2 * 90 * 576


@pytest.mark.parametrize('argv, message', [
    (['DARTS_V3'], 'unknown genotype'),
    ([], 'exactly one of'),
    (['DARTS_V2', '--summary', 'DARTS_V2'], 'exactly one of'),
    (['DARTS_V2', '--animate'], '--animate'),
    (['--summary', 'DARTS_V2', '--view'], '--view'),
    (['--summary', 'DARTS_V2', '--dataset', 'cifar10,mnist'], "unknown --dataset 'mnist'"),
    (['--history', 'no-such-search'], 'is not a folder'),
])
def test_user_errors_are_one_sentence(in_tmp, argv, message):
    with pytest.raises(utils.UserError, match=re.escape(message)) as error:
        visualize.main(argv)
    assert '\n' not in str(error.value)


def test_history_needs_metrics(in_tmp):
    (in_tmp / 'eval').mkdir()
    with pytest.raises(utils.UserError, match='holds no metrics.jsonl'):
        visualize.main(['--history', 'eval'])
    (in_tmp / 'eval' / 'metrics.jsonl').write_text('{"epoch": 0, "valid_top1": 50.0}\n')
    with pytest.raises(utils.UserError, match='no architecture weights'):
        visualize.main(['--history', 'eval'])
