"""Draw cells, the history of a search, and the size of the network a genotype builds.

    python visualize.py DARTS_V2                          # normal.pdf, reduction.pdf and their .gv sources
    python visualize.py search-EXP/genotype.json --format png --outdir figures
    python visualize.py --history search-EXP --animate    # alphas_*.png, progress.png, normal.gif, reduction.gif
    python visualize.py --summary DARTS_V2 --dataset cifar10,cifar100
    python visualize.py --report search-EXP               # search-EXP/report.html, one self-contained page
"""
import os

import drawing
import genotypes
import model
import report as report_page
import utils

def build_parser():
    parser = utils.ArgumentParser(description='Draw cells, the history of a search, a run report, or network sizes.')
    parser.add_argument('genotype', nargs='?',
                        help='genotype to draw: a published name, a genotype.json (or its search folder), or '
                             'Genotype(...) text')
    parser.add_argument('--history', metavar='EXP_DIR',
                        help="plot a search's metrics.jsonl: softmax of the architecture weights per edge over the "
                             "epochs, validation accuracy and skip_connect count")
    parser.add_argument('--report', metavar='EXP_DIR',
                        help="write report.html, one self-contained page of a run folder (search or training): final "
                             "numbers, curves, cells, architecture weights, arguments")
    parser.add_argument('--summary', metavar='GENOTYPE',
                        help="print parameters and FLOPs of the evaluation networks a genotype builds at the papers' "
                             "sizes")
    parser.add_argument('--format', choices=('png', 'svg', 'pdf'),
                        help='file format of the drawings (default: pdf for cells, png for --history)')
    parser.add_argument('--outdir',
                        help='output folder (default: the current folder; for --history and --report the run folder)')
    parser.add_argument('--view', action='store_true', help='open the drawn cells in the system viewer')
    parser.add_argument('--animate', action='store_true',
                        help='with --history: also write normal.gif and reduction.gif, the derived cell of every epoch')
    parser.add_argument('--dataset', action='append',
                        help='with --summary: cifar10, cifar100 or imagenet (nas_bench_201: imagenet16-120); '
                             'repeatable or comma-separated (default: all but cifar100)')
    parser.add_argument('--search_space', choices=('darts', 'nas_bench_201'),
                        help="the genotype's space, checked when given (default: the genotype's own)")
    return parser


def make_outdir(path):
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise utils.UserError(f'cannot create the output folder {path} ({error.strerror})') from None
    return path


def parse_datasets(values, sizes):
    default = ','.join(name for name in sizes if name != 'cifar100')
    datasets = [name.strip() for value in values or [default] for name in value.split(',') if name.strip()]
    unknown = [name for name in datasets if name not in sizes]
    if unknown or not datasets:
        raise utils.UserError(f'unknown --dataset {unknown[0] if unknown else ""!r} for --summary; use '
                              f'{", ".join(sizes)}')
    return list(dict.fromkeys(datasets))


def summarize(genotype, datasets):
    """Parameters (auxiliary head excluded) and FLOPs of the evaluation network at each paper's size (for a
    NAS-Bench-201 cell, the benchmark's: C = 16, N = 5 cells a stage)."""
    row = '{:<14} {:>3} {:>5} {:>7} {:>5} {:>10} {:>9} {:>13}'
    print(row.format('dataset', 'C', 'cells', 'classes', 'input', 'params (M)', 'FLOPs (G)', 'mult-adds (M)'))
    results = {}
    for dataset in datasets:
        results[dataset] = cost = model.paper_network_cost(genotype, dataset)
        print(row.format(dataset, cost['C'], cost['layers'], cost['num_classes'], cost['image_size'],
                         f"{cost['params_M']:.6f}", f"{cost['flops'] / 1e9:.3f}", f"{cost['flops'] / 2e6:.1f}"))
    return results


def load_genotype(source, search_space=None):
    """The genotype of any accepted form, or of a search folder's genotype.json; of `search_space` if given."""
    genotype = genotypes.parse_genotype(os.path.join(source, 'genotype.json') if os.path.isdir(source) else source)
    if search_space is not None and isinstance(genotype, genotypes.CellNB201) != (search_space == 'nas_bench_201'):
        raise utils.UserError(f'{source[:60]} is not a cell of --search_space {search_space}')
    return genotype


def main(argv=None):
    args = build_parser().parse_args(argv)
    if sum(mode is not None for mode in (args.genotype, args.history, args.summary, args.report)) != 1:
        raise utils.UserError('give exactly one of: a genotype to draw, --history EXP_DIR, --report EXP_DIR or '
                              '--summary GENOTYPE')
    if args.animate and args.history is None:
        raise utils.UserError('--animate works with --history EXP_DIR only')
    if args.view and args.genotype is None:
        raise utils.UserError('--view opens drawn cells; give a genotype to draw')
    if args.summary is not None:
        genotype = load_genotype(args.summary, args.search_space)
        sizes = model.NB201_SIZES if isinstance(genotype, genotypes.CellNB201) else model.PAPER_SIZES
        return summarize(genotype, parse_datasets(args.dataset, sizes))
    if args.report is not None:
        run = report_page.read_run(args.report)  # before any folder is made
        path = os.path.join(make_outdir(args.outdir or args.report), 'report.html')
        return report([report_page.write_report(args.report, run, path)])
    if args.history is not None:
        rows = drawing.load_history(args.history)
        outdir = make_outdir(args.outdir or args.history)
        return report(drawing.draw_history(rows, outdir, args.format or 'png', args.animate))
    genotype = load_genotype(args.genotype, args.search_space)
    return report(drawing.draw_cells(genotype, make_outdir(args.outdir or '.'), args.format or 'pdf', args.view))


def report(written):
    """Name every file written, one per line."""
    for path in written:
        print(f'wrote {path}')
    return written


if __name__ == '__main__':
    utils.run_cli(main)
