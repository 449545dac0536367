"""A sweep's table and plot: mean ± std over the seeds of each method, search space and data set, read from
the run folders that are done (sweeps.py), written as table.md, table.csv and comparison.png."""
import csv
import io
import os
import statistics

import genotypes
import model
from sweeps import best_run, group_name, run_folder, state
from utils import read_jsonl

def run_results(folder, run):
    """What the table reads from one finished run."""
    path = run_folder(folder, run)
    rows = read_jsonl(os.path.join(path, 'search', 'metrics.jsonl'))
    genotype = genotypes.parse_genotype(os.path.join(path, 'search', 'genotype.json'))
    cost = model.paper_network_cost(genotype, 'cifar10')
    result = {'final_valid_top1': rows[-1]['valid_top1'], 'best_valid_top1': max(row['valid_top1'] for row in rows),
              'params_M': cost['params_M'], 'flops_M': cost['flops'] / 1e6,
              'search_hours': sum(row['time_s'] for row in rows) / 3600,
              'images_per_s': statistics.fmean(row['images_per_s'] for row in rows)}
    result.update({key: value for key, value in rows[-1].items() if key.startswith('benchmark_')})
    for part, fields in (('eval', ('test_top1',)), ('short', ('valid_top1',))):
        metrics_path = os.path.join(path, part, 'metrics.jsonl')
        if os.path.isfile(metrics_path):
            last = read_jsonl(metrics_path)[-1]
            result.update({f'{"" if part == "eval" else "short_"}{field}': last[field] for field in fields})
    return result


def table(folder, sweep):
    """[{method, search_space, dataset, runs, and mean and std of each measure}] over the seeds of the runs
    that are done, in the grid's order; with protocol best_of also the best seed and its full retraining."""
    rows = []
    for group, runs in sweep.groups().items():
        done = [run for run in runs if state(run_folder(folder, run)) == 'done']
        if not done:
            continue
        results = [run_results(folder, run) for run in done]
        method, space, dataset = group
        row = {'method': method, 'search_space': space, 'dataset': dataset, 'runs': len(results)}
        for key in results[0]:
            values = [result[key] for result in results if key in result]
            row[f'{key}_mean'] = statistics.fmean(values)
            row[f'{key}_std'] = statistics.stdev(values) if len(values) > 1 else 0.0
        best = os.path.join(folder, 'best', group_name(group))
        if sweep.protocol == 'best_of' and state(best) == 'done':
            row['best_seed'] = best_run(folder, runs).seed
            row['best_test_top1'] = read_jsonl(os.path.join(best, 'eval', 'metrics.jsonl'))[-1]['test_top1']
        rows.append(row)
    return rows


def markdown(rows):
    measures = [key[:-len('_mean')] for key in rows[0] if key.endswith('_mean')] if rows else []
    best = any('best_test_top1' in row for row in rows)
    lines = ['| method | space | data set | runs | ' + ' | '.join(measures) + (' | best seed | its test_top1' if best
                                                                           else '') + ' |',
             '| --- | --- | --- | ---: | ' + ' | '.join('---:' for _ in measures) + (' | ---: | ---:' if best else '')
             + ' |']
    for row in rows:
        cells = [f"{row[f'{m}_mean']:.{precision(m)}f} ± {row[f'{m}_std']:.{precision(m)}f}" for m in measures]
        if best:
            cells += [str(row.get('best_seed', '')), f"{row['best_test_top1']:.2f}" if 'best_test_top1' in row else '']
        lines.append(f"| {row['method']} | {row['search_space']} | {row['dataset']} | {row['runs']} | "
                     + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def precision(measure):
    return 3 if measure in ('params_M', 'search_hours') else 1 if measure != 'images_per_s' else 0


def write_table(folder, rows):
    """table.md, table.csv and comparison.png in the sweep folder; returns their paths."""
    paths = [os.path.join(folder, name) for name in ('table.md', 'table.csv', 'comparison.png')]
    with open(paths[0], 'w', encoding='utf-8') as f:
        f.write(markdown(rows))
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(key for row in rows for key in row)))
        writer.writeheader()
        writer.writerows(rows)
    with open(paths[1], 'w', encoding='utf-8', newline='') as f:
        f.write(buffer.getvalue())
    plot_comparison(rows, paths[2])
    return paths


def plot_comparison(rows, path):
    """One bar per method and benchmark (space and data set): the mean accuracy over the seeds, the retrained
    test accuracy where there is one, else the search's final validation accuracy, with its std."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    measure = 'test_top1' if rows and 'test_top1_mean' in rows[0] else 'final_valid_top1'
    benchmarks = list(dict.fromkeys((row['search_space'], row['dataset']) for row in rows))
    methods = list(dict.fromkeys(row['method'] for row in rows))
    width = 0.8 / max(len(methods), 1)
    figure, axes = plt.subplots(figsize=(max(4, 1.5 * len(benchmarks) + 2), 3.5))
    for i, method in enumerate(methods):
        found = {(row['search_space'], row['dataset']): row for row in rows if row['method'] == method}
        xs = [b + i * width for b, key in enumerate(benchmarks) if key in found]
        means = [found[key][f'{measure}_mean'] for key in benchmarks if key in found]
        stds = [found[key][f'{measure}_std'] for key in benchmarks if key in found]
        axes.bar(xs, means, width, yerr=stds, capsize=3, label=method)
    axes.set_xticks([b + width * (len(methods) - 1) / 2 for b in range(len(benchmarks))])
    axes.set_xticklabels([f'{space}\n{dataset}' for space, dataset in benchmarks])
    axes.set_ylabel(('test' if measure == 'test_top1' else 'search validation') + ' top-1 (%)')
    axes.legend(fontsize='small')
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
