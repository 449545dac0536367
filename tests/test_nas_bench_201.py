"""NAS-Bench-201: its networks equal those the benchmark's own code (xautodl 1.0.0) builds, the supernet derives
cells by the benchmark's rule, every method that makes sense in the space searches it, and a cell's string
retrains, tests and draws."""
import json
import random
import sys

import matplotlib.axes
import pytest
import torch
from xautodl.models.cell_infers.tiny_network import TinyNetwork
from xautodl.models.cell_operations import NAS_BENCH_201
from xautodl.models.cell_searchs.genotypes import Structure
from xautodl.models.cell_searchs.search_model_darts import TinyNetworkDarts

import genotypes
import model
import operations
import utils
from conftest import load_script, metrics

train_search = load_script('train_search')
train = load_script('train')
test = load_script('test')
visualize = load_script('visualize')

RESNET_LIKE = '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|'


def random_architectures(count, seed=0):
    rng = random.Random(seed)
    return ['+'.join('|' + '|'.join(f'{rng.choice(NAS_BENCH_201)}~{source}' for source in range(node)) + '|'
                     for node in range(1, 4)) for _ in range(count)]


ARCHITECTURES = [RESNET_LIKE, '|none~0|+|none~0|none~1|+|none~0|none~1|none~2|',
                 '|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|',
                 *random_architectures(3)]


def test_the_ops_and_their_order_are_the_benchmarks():
    assert operations.NB201_PRIMITIVES == list(NAS_BENCH_201)


@pytest.mark.parametrize('arch', ARCHITECTURES)
@pytest.mark.parametrize('classes', [10, 100, 120])
def test_the_evaluation_network_is_the_benchmarks_to_the_weight_and_the_logit(arch, classes):
    torch.manual_seed(0)
    theirs = TinyNetwork(16, 5, Structure.str2structure(arch), classes).eval()
    ours = model.NetworkNB201(16, 5, genotypes.parse_genotype(arch), classes).eval()
    assert [name for name, _ in ours.named_modules()] == [name for name, _ in theirs.named_modules()]
    expected = theirs.state_dict()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in expected.items()}
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    ours.load_state_dict(expected, strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours(x)[0], theirs(x)[1])


def test_strings_parse_print_and_refuse_exactly():
    cell = genotypes.parse_genotype(RESNET_LIKE)
    assert genotypes.genotype_repr(cell) == RESNET_LIKE == Structure.str2structure(RESNET_LIKE).tostr()
    assert cell.nodes[2] == (('skip_connect', 0), ('nor_conv_3x3', 1), ('nor_conv_3x3', 2))
    assert genotypes.parse_genotype(json.dumps(genotypes.genotype_to_dict(cell))) == cell
    assert genotypes.count_ops(cell, 'nor_conv_3x3') == 5
    for text, message in (('|conv_5x5~0|', "unknown NAS-Bench-201 op 'conv_5x5'"),
                          ('|none~1|', "node 1 takes input '1'"),
                          ('|none~0|+|none~0|', 'node 2 must take each of nodes 0 to 1 exactly once'),
                          ('|none~0|+none~0|none~1|', 'node 2 of the NAS-Bench-201 string must look like')):
        with pytest.raises(genotypes.GenotypeError, match=message):
            genotypes.parse_genotype(text)


def test_the_supernet_derives_as_the_benchmarks_darts_search_does():
    torch.manual_seed(0)
    net = train_search.model_search_nb201.SearchNetworkNB201(8, 1, 10)
    ours = train_search.architecture.Architecture(net, train_search.methods.Methods())
    assert net.arch_parameters()[0].shape == (6, 5) and net.op_names == list(NAS_BENCH_201)
    theirs = TinyNetworkDarts(8, 1, 4, 10, list(NAS_BENCH_201), False, True)
    for seed in range(5):
        alphas = torch.randn(6, 5, generator=torch.Generator().manual_seed(seed))
        alphas[seed, 0] = 10.0  # `none` wins one edge: the benchmark's rule keeps it
        with torch.no_grad():
            net.alphas_normal.copy_(alphas)
            theirs.arch_parameters.copy_(alphas)
        assert genotypes.genotype_repr(ours.genotype()) == theirs.genotype().tostr()
        assert ours.genotype().edges[seed][0] == 'none'


TINY = ['--search_space', 'nas_bench_201', '--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size',
        '128', '--synthetic_test_size', '32', '--num_classes', '4', '--init_channels', '8', '--layers', '1',
        '--batch_size', '32', '--epochs', '2', '--device', 'cpu', '--report_freq', '1000',
        '--arch_learning_rate', '0.05']


@pytest.mark.slow
@pytest.mark.parametrize('flags', [[], ['--unrolled'], ['--method', 'pc_darts', '--partial_channels', '2'],
                                   ['--method', 'alpha_darts', '--partial_channels', '2', '--warmup_epochs', '0'],
                                   ['--hd_on_weights'], ['--method', 'dadarts'],
                                   ['--method', 'da2s', '--da2s_alpha_start', '1']],
                         ids=['darts', 'darts-2nd', 'pc_darts', 'alpha_darts', 'hd', 'dadarts', 'da2s'])
def test_every_method_that_makes_sense_searches_the_space(flags, in_tmp):
    cell = train_search.main(TINY + flags + ['--exp_path', 'search'])
    assert isinstance(cell, genotypes.CellNB201) and genotypes.parse_genotype('search/genotype.json') == cell
    rows = metrics(in_tmp / 'search')
    assert len(rows) == 2 and rows[-1]['arch_weights'] != rows[0]['arch_weights'], 'the architecture learns'
    names = {name for name, _ in torch.load(in_tmp / 'search' / 'checkpoint.pt', weights_only=True)['model'].items()}
    assert ('betas_normal' in names) == ('--partial_channels' in flags)  # edge normalisation; DA2S has no betas here
    if '--method' in flags and flags[1] == 'da2s':
        assert rows[-1]['alpha_da2s_edges'] == 0 and rows[-1]['alpha_da2s_ops'] > 0, 'op entropy only'


@pytest.mark.parametrize('flag, message', [
    (['--location', 'after_every'], '--location after_every'), (['--method', 'att_darts'], '--location after_every'),
    (['--max_skip', '2'], '--max_skip'), (['--primitives', 'darts'], '--primitives')])
def test_flags_of_the_darts_cell_are_refused_in_one_sentence(flag, message, in_tmp):
    with pytest.raises(utils.UserError, match=f'{message}.* shapes the DARTS cell and cannot apply'):
        train_search.main(TINY + flag)


def test_a_cell_needs_its_own_space(in_tmp):
    with pytest.raises(utils.UserError, match='is a NAS-Bench-201 cell; give --search_space nas_bench_201'):
        train.main(['--arch', RESNET_LIKE, '--dataset', 'synthetic'])
    with pytest.raises(utils.UserError, match='needs a NAS-Bench-201 architecture string'):
        train.main(['--search_space', 'nas_bench_201', '--dataset', 'synthetic'])
    with pytest.raises(utils.UserError, match='is a DARTS cell; give --search_space darts'):
        train.main(['--search_space', 'nas_bench_201', '--arch', 'DARTS_V2', '--dataset', 'synthetic'])


def test_the_benchmarks_recipe_is_the_default():
    args, _ = train.resolve_arguments(train.build_parser(), ['--search_space', 'nas_bench_201', '--epochs', '3'])
    assert (args.init_channels, args.layers, args.batch_size, args.learning_rate, args.weight_decay) == \
        (16, 5, 256, 0.1, 5e-4)
    assert (args.nesterov, args.drop_path_prob, args.grad_clip, args.epochs, args.auxiliary) == (True, 0, 0, 3, False)


@pytest.mark.slow
def test_an_architecture_string_retrains_tests_and_draws(in_tmp, capsys):
    data = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '512', '--synthetic_test_size',
            '64', '--num_classes', '4']
    final = train.main(['--search_space', 'nas_bench_201', '--arch', RESNET_LIKE, '--init_channels', '8', '--layers',
                        '1', '--epochs', '3', '--device', 'cpu', '--exp_path', 'eval'] + data)
    assert final['test_top1'] > 40.0, 'the cell learns the 4 classes (chance: 25%)'
    saved = utils.read_jsonl('eval/metrics.jsonl')
    assert [row['lr'] for row in saved] == pytest.approx([0.1, 0.075, 0.025])  # cosine over 3 epochs
    assert test.main(['--model_path', 'eval/weights.pt'])['top1'] == final['test_top1']
    (in_tmp / 'loose').mkdir()
    (in_tmp / 'loose' / 'weights.pt').write_bytes((in_tmp / 'eval' / 'weights.pt').read_bytes())
    result = test.main(['--model_path', 'loose/weights.pt', '--arch', RESNET_LIKE] + data)
    assert result['top1'] == final['test_top1'], 'sizes read from the weights, data from the flags'
    assert 'C 8, N = 1 cells a stage, with --init_channels, --layers' in capsys.readouterr().out
    written = visualize.main([RESNET_LIKE, '--format', 'svg', '--outdir', 'cell'])
    assert sorted(written) == ['cell/cell.gv', 'cell/cell.svg']
    source = (in_tmp / 'cell' / 'cell.gv').read_text()
    assert source.count('nor_conv_3x3') == 5 and source.count('skip_connect') == 1


# ----------------------------------------------------------------------------------------- the benchmark's tables

SETS = {'cifar10-valid': ('x-valid', 'ori-test'), 'cifar10': ('ori-test',),
        'cifar100': ('x-valid', 'x-test', 'ori-test'), 'ImageNet16-120': ('x-valid', 'x-test', 'ori-test')}


def tabulated(cell, dataset):
    """The miniature's made-up accuracy of a cell: 50, plus 5 per 3x3 convolution, plus one per dataset."""
    return 50.0 + 5 * cell.count('nor_conv_3x3') + list(SETS).index(dataset)


def arch_results(api_utils, index, cell):
    """A cell's results, two seeds on every dataset, built with the benchmark API's own classes."""
    results = api_utils.ArchResults(index, cell)
    for dataset, sets in SETS.items():
        for seed in (777, 888):
            count = api_utils.ResultsCount(dataset, None, [40.0, 60.0], [1.2, 0.9], 1.0, 100.0,
                                           {'arch_str': cell, 'channel': 16, 'num_cells': 5, 'class_num': 10}, seed,
                                           2, None)
            accuracies = {f'{name}@{epoch}': tabulated(cell, dataset) + (seed - 832.5) / 55 * epoch
                          for name in sets for epoch in range(2)}
            count.update_eval(accuracies, dict.fromkeys(accuracies, 0.5), dict.fromkeys(accuracies, 1.0))
            results.update(dataset, seed, count)
    return results


def write_miniatures(folder, cells):
    """The benchmark in both official formats, holding `cells`: a NATS-Bench topology folder (as
    NATS-tss-v1_0-3ffb9-simple) and a NAS-Bench-201 .pth file (as NAS-Bench-201-v1_1-096897.pth)."""
    import nas_201_api.api_utils
    import nats_bench.api_utils
    nats = folder / 'NATS-tss-mini-simple'
    nats.mkdir(parents=True)
    nats_bench.api_utils.pickle_save({'meta_archs': cells}, str(nats / 'meta.pickle'))
    for index, cell in enumerate(cells):
        nats_bench.api_utils.pickle_save({'200': arch_results(nats_bench.api_utils, index, cell).state_dict()},
                                         str(nats / f'{index:06d}.pickle'))
    infos = {index: {hp: arch_results(nas_201_api.api_utils, index, cell).state_dict() for hp in ('less', 'full')}
             for index, cell in enumerate(cells)}
    torch.save({'meta_archs': cells, 'arch2infos': infos, 'evaluated_indexes': set(range(len(cells)))},
               folder / 'NAS-Bench-201-mini.pth')
    return str(nats), str(folder / 'NAS-Bench-201-mini.pth')


def test_test_py_looks_a_cell_up_in_both_formats_of_the_benchmark(in_tmp, capsys, monkeypatch):
    other = '|none~0|+|none~0|none~1|+|none~0|none~1|none~2|'
    for path in write_miniatures(in_tmp, [other, RESNET_LIKE]):
        results = test.main(['--search_space', 'nas_bench_201', '--arch', RESNET_LIKE, '--benchmark', path])
        assert results['benchmark_index'] == 1 and results['benchmark_cifar100_test'] == tabulated(RESNET_LIKE,
                                                                                                   'cifar100')
        assert results['benchmark_cifar10_valid'] == tabulated(RESNET_LIKE, 'cifar10-valid')
        assert results['benchmark_imagenet16_valid'] == tabulated(RESNET_LIKE, 'ImageNet16-120')
        assert f'{RESNET_LIKE}: cifar10 valid 75.00, cifar10 test 76.00' in capsys.readouterr().out
    missing = '|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|'
    assert test.main(['--arch', missing, '--benchmark', path, '--output', 'out.json']) == {'benchmark_cell': missing}
    assert 'not in the benchmark' in capsys.readouterr().out and (in_tmp / 'out.json').is_file()
    monkeypatch.setitem(sys.modules, 'nats_bench', None)  # as if the package were not installed
    with pytest.raises(utils.UserError, match=r'install it with `pip install nats_bench`'):
        test.main(['--arch', RESNET_LIKE, '--benchmark', str(in_tmp / 'NATS-tss-mini-simple')])
    with pytest.raises(utils.UserError, match='does not exist'):
        test.main(['--arch', RESNET_LIKE, '--benchmark', 'NATS-tss-v1_0-3ffb9-simple'])


@pytest.mark.slow
def test_a_search_with_the_benchmark_logs_each_epochs_tabulated_accuracy(in_tmp, capsys):
    flags = TINY + ['--epochs', '3', '--arch_learning_rate', '0.3']
    train_search.main(flags + ['--exp_path', 'first'])
    cells = list(dict.fromkeys(row['genotype'][genotypes.NB201_KEY] for row in metrics(in_tmp / 'first')))
    nats, _ = write_miniatures(in_tmp, cells)
    train_search.main(flags + ['--exp_path', 'search', '--benchmark', nats])  # the same search, looked up
    rows = metrics(in_tmp / 'search')
    for row in rows:
        cell = row['genotype'][genotypes.NB201_KEY]
        assert row['benchmark_cifar10_test'] == tabulated(cell, 'cifar10') and row['benchmark_index'] == cells.index(
            cell)
    log = (in_tmp / 'search' / 'log.txt').read_text()
    assert log.count('benchmark: cifar10 valid') == 3
    labels = []
    with pytest.MonkeyPatch.context() as patch:
        plot = matplotlib.axes.Axes.plot
        patch.setattr(matplotlib.axes.Axes, 'plot', lambda self, *a, **k: labels.append(k.get('label')) or plot(
            self, *a, **k))
        visualize.main(['--history', 'search'])
    assert {'NAS-Bench-201 CIFAR-10 test', 'NAS-Bench-201 CIFAR-100 test', 'validation top-1'} <= set(labels)
    with pytest.raises(utils.UserError, match='--benchmark looks cells up in NAS-Bench-201; give --search_space'):
        train_search.main(TINY[2:] + ['--benchmark', nats])


def test_visualize_summarizes_a_cell_at_the_benchmarks_sizes(capsys):
    sizes = visualize.main(['--summary', RESNET_LIKE, '--search_space', 'nas_bench_201', '--dataset',
                            'cifar10,cifar100,imagenet16-120'])
    for dataset, classes in (('cifar10', 10), ('cifar100', 100), ('imagenet16-120', 120)):
        theirs = TinyNetwork(16, 5, Structure.str2structure(RESNET_LIKE), classes)
        assert sizes[dataset]['params_M'] == sum(p.numel() for p in theirs.parameters()) / 1e6
    assert sizes['imagenet16-120']['image_size'] == 16
    with pytest.raises(utils.UserError, match='is not a cell of --search_space darts'):
        visualize.main(['--summary', RESNET_LIKE, '--search_space', 'darts'])


def test_the_search_split_can_be_the_benchmarks_split_file(tmp_path):
    path = tmp_path / 'cifar-split.txt'
    path.write_text(json.dumps({'train': ['int', ['3', '0', '7']], 'valid': ['int', ['1', '5']]}))
    first, rest = train_search.search_split.indices(range(8), 'cifar10', 0.5, str(path))
    assert first.tolist() == [3, 0, 7] and rest.tolist() == [1, 5]
    assert [t.tolist() for t in train_search.search_split.indices(range(4), 'cifar10', 0.5)] == [[0, 1], [2, 3]]
    for content, message in (({'train': ['int', ['9']], 'valid': ['int', []]}, 'outside the 8'),
                             ({'train': ['int', ['1']], 'valid': ['int', ['1']]}, 'names an image twice'),
                             ({'train': ['int', ['1']]}, 'not a NAS-Bench-201 split file')):
        path.write_text(json.dumps(content))
        with pytest.raises(utils.UserError, match=message):
            train_search.search_split.indices(range(8), 'cifar10', 0.5, str(path))


def test_a_preset_ranks_above_the_search_spaces_defaults_and_a_typed_flag_above_both():
    args, _, _ = train_search.resolve_arguments(train_search.build_parser(), [
        '--search_space', 'nas_bench_201', '--method', 'beta_darts', '--epochs', '7'])
    assert (args.weight_decay, args.epochs) == (3e-4, 7)
