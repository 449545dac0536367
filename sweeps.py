"""Sweeps: a grid of searches (methods × seeds × search spaces × data sets), each optionally retrained, run
through submitit on this machine or a SLURM cluster, and one table of mean ± std over the seeds.

A sweep folder holds `sweep.json` (the grid and the flags) and one folder per run, `runs/NAME/`, with the
search in `search/`, the retraining in `eval/`, and `done.json` or `failed.json` once it ended. A run with
neither is pending, or interrupted if its search or retraining has a checkpoint; running the sweep again
skips the runs that are done and resumes the interrupted ones with the scripts' own `--resume`.
"""
import csv
import io
import itertools
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import genotypes
import model
from utils import UserError, write_json

ROOT = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class Run:
    method: str
    search_space: str
    dataset: str
    seed: int

    @property
    def name(self):
        return f'{self.search_space}-{self.dataset}-{self.method}-seed{self.seed}'


@dataclass(frozen=True)
class Sweep:
    """What sweep.json records: the grid, and the flags every search and retraining gets."""
    methods: tuple
    search_spaces: tuple
    datasets: tuple
    seeds: tuple
    search_flags: str = ''
    train_flags: str = ''  # '' : no retraining

    def runs(self):
        return [Run(*values) for values in itertools.product(self.methods, self.search_spaces, self.datasets,
                                                             self.seeds)]


def save_sweep(folder, sweep):
    os.makedirs(folder, exist_ok=True)
    write_json(os.path.join(folder, 'sweep.json'), asdict(sweep))


def load_sweep(folder):
    path = os.path.join(folder, 'sweep.json')
    if not os.path.isfile(path):
        raise UserError(f'{folder} holds no sweep.json; start a sweep there with --methods and --seeds')
    with open(path, encoding='utf-8') as f:
        return Sweep(**{key: tuple(value) if isinstance(value, list) else value for key, value in json.load(f).items()})


def run_folder(folder, run):
    return os.path.join(folder, 'runs', run.name)


def state(folder, run):
    """'done', 'failed', 'interrupted' (a checkpoint, no end) or 'pending'."""
    path = run_folder(folder, run)
    for name, status in (('done.json', 'done'), ('failed.json', 'failed')):
        if os.path.isfile(os.path.join(path, name)):
            return status
    started = any(os.path.isfile(os.path.join(path, part, 'checkpoint.pt')) for part in ('search', 'eval'))
    return 'interrupted' if started else 'pending'


def last_log_line(path):
    """The last line of a run part's log.txt, or of its captured stderr, for the report of a failure."""
    for name in ('stderr.txt', 'log.txt'):
        file = os.path.join(path, name)
        if os.path.isfile(file):
            with open(file, encoding='utf-8', errors='replace') as f:
                lines = [line.rstrip() for line in f if line.strip()]
            if lines:
                return lines[-1]
    return ''


class RunScripts:
    """What a submitit job runs: the search of one run, then its retraining, each in a process of its own,
    resumed from its checkpoint when one is there. On SLURM, submitit calls `checkpoint` before a
    preemption or a timeout: the script gets SIGTERM, saves where it is, and the job is queued again."""

    def __init__(self, folder, run, search_flags, train_flags):
        self.folder, self.run, self.search_flags, self.train_flags = (os.path.abspath(folder), run, search_flags,
                                                                     train_flags)
        self.process = None

    def _part(self, script, part, argv):
        path = os.path.join(run_folder(self.folder, self.run), part)
        resuming = os.path.isfile(os.path.join(path, 'checkpoint.pt'))
        command = [sys.executable, os.path.join(ROOT, f'{script}.py')] + (
            ['--resume', path] if resuming else argv + ['--exp_path', path])
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, 'stderr.txt'), 'w', encoding='utf-8') as stderr:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
            code = self.process.wait()
        self.process = None
        return code, path

    def __call__(self):
        started, run = time.time(), self.run
        search = ['--method', run.method, '--search_space', run.search_space, '--dataset', run.dataset,
                  '--seed', str(run.seed)] + shlex.split(self.search_flags)
        parts = [('train_search', 'search', search)]
        if self.train_flags:
            parts.append(('train', 'eval', ['--arch_path', os.path.join(run_folder(self.folder, run), 'search',
                                                                        'genotype.json'), '--dataset', run.dataset,
                                            '--seed', str(run.seed)] + shlex.split(self.train_flags)))
        for script, part, argv in parts:
            code, path = self._part(script, part, argv)
            if code != 0:
                failure = {'part': part, 'exit_status': code, 'last_line': last_log_line(path)}
                write_json(os.path.join(run_folder(self.folder, run), 'failed.json'), failure)
                raise RuntimeError(f'{run.name}: {script}.py ended with exit status {code}: {failure["last_line"]}')
        write_json(os.path.join(run_folder(self.folder, run), 'done.json'),
                   {'seconds': time.time() - started, **asdict(run)})
        return run.name

    def checkpoint(self):
        submitit = _submitit()
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait()
        return submitit.helpers.DelayedSubmission(RunScripts(self.folder, self.run, self.search_flags,
                                                             self.train_flags))


# ----------------------------------------------------------------------------------------- executors

def slurm_parameters(partition, minutes, gpus, parallelism):
    """submitit's SLURM parameters of the sweep's flags. A job gets SIGUSR2 two minutes before its time limit:
    submitit then calls RunScripts.checkpoint, which lets the script save, and queues the job again."""
    return dict(partition=partition, time=minutes, gpus_per_node=gpus, array_parallelism=parallelism,
                job_name='darts-sweep', signal_delay_s=120)


def _submitit():
    try:
        import submitit
    except ImportError:
        raise UserError('sweep.py runs its searches through submitit; install it with "pip install submitit"') from None
    return submitit


def executor(kind, folder, slurm=None):
    """A submitit executor: 'local' (processes on this machine) or 'slurm' (`slurm`: slurm_parameters)."""
    submitit = _submitit()
    # The jobs unpickle RunScripts wherever they start: they find this folder's modules through PYTHONPATH, which
    # the local executor's processes and SLURM's jobs inherit.
    paths = [ROOT] + [path for path in os.environ.get('PYTHONPATH', '').split(os.pathsep) if path and path != ROOT]
    os.environ['PYTHONPATH'] = os.pathsep.join(paths)
    logs = os.path.join(folder, 'submitit')
    if kind == 'local':
        return submitit.LocalExecutor(logs)
    try:
        result = submitit.SlurmExecutor(logs)
    except RuntimeError:  # submitit looks for srun
        raise UserError('--executor slurm runs on a SLURM cluster, and there is no srun here; --dry writes the '
                        'sbatch script instead') from None
    result.update_parameters(**slurm)
    return result


def sbatch_text(folder, slurm, runs):
    """The sbatch script of a job array of `runs` runs that the SLURM executor would submit (a dry run writes it
    instead of submitting)."""
    _submitit()
    from submitit.slurm.slurm import _make_sbatch_string
    logs = os.path.join(folder, 'submitit')
    command = f'{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(logs)}'
    return _make_sbatch_string(command, logs, map_count=runs, **slurm)


def todo(folder, sweep):
    """The runs not done yet; a failed run is tried again."""
    for path in (os.path.join(run_folder(folder, run), 'failed.json') for run in sweep.runs()):
        if os.path.isfile(path):
            os.remove(path)
    return [run for run in sweep.runs() if state(folder, run) != 'done']


def submit_slurm(folder, sweep, slurm_executor):
    """Every run not done, as one job array; returns the jobs."""
    callables = [RunScripts(folder, run, sweep.search_flags, sweep.train_flags) for run in todo(folder, sweep)]
    with slurm_executor.batch():
        jobs = [slurm_executor.submit(runner) for runner in callables]
    return jobs


def run_local(folder, sweep, local_executor, parallel, report, poll_s=1.0):
    """Every run not done, at most `parallel` at a time, through submitit's local executor; `report(line)`
    tells the progress. Returns the names of the runs that failed."""
    waiting, running, failed = todo(folder, sweep), {}, []
    while waiting or running:
        if waiting and len(running) < parallel:
            while waiting and len(running) < parallel:
                run = waiting.pop(0)
                running[run] = local_executor.submit(RunScripts(folder, run, sweep.search_flags, sweep.train_flags))
            report(progress_line(folder, sweep, len(running)))
        time.sleep(poll_s)
        for run, job in list(running.items()):
            if job.done():
                del running[run]
                if state(folder, run) != 'done':
                    failed.append(run.name)
                    report(f'{run.name} failed: {last_failure(folder, run)}')
    report(progress_line(folder, sweep, 0))
    return failed


def last_failure(folder, run):
    path = os.path.join(run_folder(folder, run), 'failed.json')
    if not os.path.isfile(path):
        return 'the job ended without a result (see its submitit logs)'
    with open(path, encoding='utf-8') as f:
        failure = json.load(f)
    return f"{failure['part']} exited with status {failure['exit_status']}: {failure['last_line']}"


def progress_line(folder, sweep, running):
    """'N done, R running, F failed, P to go; about T left' from the runs' folders."""
    states = [state(folder, run) for run in sweep.runs()]
    done = [json_of(os.path.join(run_folder(folder, run), 'done.json')) for run, s in zip(sweep.runs(), states)
            if s == 'done']
    to_go = len(states) - len(done) - states.count('failed') - running
    line = f'{len(done)} done, {running} running, {states.count("failed")} failed, {to_go} to go'
    if done and to_go + running:
        mean = statistics.fmean(entry['seconds'] for entry in done)
        line += f'; about {format_seconds(mean * (to_go + running) / max(running, 1))} left'
    return line


def format_seconds(seconds):
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f'{hours}:{minutes:02d}:{seconds:02d}'


def json_of(path):
    with open(path, encoding='utf-8') as f:
        return json.load(f)


# ----------------------------------------------------------------------------------------- the table

def run_results(folder, run):
    """What the table reads from one finished run."""
    path = run_folder(folder, run)
    rows = [json.loads(line) for line in open(os.path.join(path, 'search', 'metrics.jsonl'), encoding='utf-8')]
    genotype = genotypes.parse_genotype(os.path.join(path, 'search', 'genotype.json'))
    cost = model.paper_network_cost(genotype, 'cifar10')
    result = {'final_valid_top1': rows[-1]['valid_top1'], 'best_valid_top1': max(row['valid_top1'] for row in rows),
              'params_M': cost['params_M'], 'flops_M': cost['flops'] / 1e6,
              'search_hours': sum(row['time_s'] for row in rows) / 3600,
              'images_per_s': statistics.fmean(row['images_per_s'] for row in rows)}
    result.update({key: value for key, value in rows[-1].items() if key.startswith('benchmark_')})
    eval_metrics = os.path.join(path, 'eval', 'metrics.jsonl')
    if os.path.isfile(eval_metrics):
        evaluated = [json.loads(line) for line in open(eval_metrics, encoding='utf-8')]
        result.update(final_test_top1=evaluated[-1]['test_top1'],
                      best_test_top1=max(row['test_top1'] for row in evaluated))
    return result


def table(folder, sweep):
    """[{method, search_space, dataset, runs, and mean and std of each measure}] over the seeds of the runs
    that are done, in the grid's order."""
    groups = {}
    for run in sweep.runs():
        if state(folder, run) == 'done':
            groups.setdefault((run.method, run.search_space, run.dataset), []).append(run_results(folder, run))
    rows = []
    for (method, space, dataset), results in groups.items():
        row = {'method': method, 'search_space': space, 'dataset': dataset, 'runs': len(results)}
        for key in results[0]:
            values = [result[key] for result in results if key in result]
            row[f'{key}_mean'] = statistics.fmean(values)
            row[f'{key}_std'] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def markdown(rows):
    measures = [key[:-len('_mean')] for key in rows[0] if key.endswith('_mean')] if rows else []
    lines = ['| method | space | data set | runs | ' + ' | '.join(measures) + ' |',
             '| --- | --- | --- | ---: | ' + ' | '.join('---:' for _ in measures) + ' |']
    for row in rows:
        cells = [f"{row[f'{m}_mean']:.{precision(m)}f} ± {row[f'{m}_std']:.{precision(m)}f}" for m in measures]
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
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
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
    measure = 'final_test_top1' if rows and 'final_test_top1_mean' in rows[0] else 'final_valid_top1'
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
    axes.set_ylabel(('test' if measure == 'final_test_top1' else 'search validation') + ' top-1 (%)')
    axes.legend(fontsize='small')
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def status_lines(folder, sweep):
    """One line per run and the progress line, for `sweep.py --status`."""
    lines = []
    for run in sweep.runs():
        current = state(folder, run)
        detail = f': {last_failure(folder, run)}' if current == 'failed' else ''
        lines.append(f'{run.name:<48} {current}{detail}')
    # Another process cannot see the jobs of the one running the sweep: interrupted runs count as to go.
    return lines + [progress_line(folder, sweep, running=0)]


def seeds_of(text):
    """'1,2,3' or '1-4' (both ends included)."""
    try:
        if '-' in text:
            first, last = (int(part) for part in text.split('-', 1))
            return tuple(range(first, last + 1))
        return tuple(int(part) for part in text.split(','))
    except ValueError:
        raise UserError(f'--seeds {text!r}: give numbers such as 1,2,3 or a range such as 1-4') from None
