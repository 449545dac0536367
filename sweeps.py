"""Sweeps: a grid of searches (methods × seeds × search spaces × data sets), each optionally retrained, run
through submitit on this machine or a SLURM cluster; sweep_table.py makes their table.

A sweep folder holds `sweep.json` (the grid and the flags) and one folder per run, `runs/NAME/`, with the
search in `search/`, the retraining in `eval/`, and `done.json` or `failed.json` once it ended. A run with
neither is pending, or interrupted if its search or retraining has a checkpoint; running the sweep again
skips the runs that are done and resumes the interrupted ones with the scripts' own `--resume`.
"""
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

from utils import UserError, read_jsonl, write_json

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


PROTOCOLS = ('mean', 'best_of')
# DARTS's short retrainings choose on held-out training images (section 3.2 of its paper); it does not say how
# many, so the sweep holds out 10%.
VALID_PORTION = '0.1'


@dataclass(frozen=True)
class Sweep:
    """What sweep.json records: the grid, the flags every search and retraining gets, and the protocol: `mean`
    (each cell retrained with train_flags, if given) or `best_of` (DARTS's: each cell retrained briefly with
    short_flags on 90% of the training set, and the best on the other 10% retrained in full with train_flags)."""
    methods: tuple
    search_spaces: tuple
    datasets: tuple
    seeds: tuple
    search_flags: str = ''
    train_flags: str = ''  # '' : no retraining
    protocol: str = 'mean'
    short_flags: str = ''

    def runs(self):
        return [Run(*values) for values in itertools.product(self.methods, self.search_spaces, self.datasets,
                                                             self.seeds)]

    def groups(self):
        """{(method, space, data set): its runs, one per seed}."""
        groups = {}
        for run in self.runs():
            groups.setdefault((run.method, run.search_space, run.dataset), []).append(run)
        return groups


@dataclass(frozen=True)
class Task:
    """One job: `parts`, [(script, part folder name, flags)], run one after the other in `folder`."""
    name: str
    folder: str
    parts: tuple


def save_sweep(folder, sweep):
    if sweep.protocol not in PROTOCOLS:
        raise UserError(f'--protocol {sweep.protocol}: choose one of {", ".join(PROTOCOLS)}')
    if sweep.protocol == 'best_of' and not (sweep.short_flags and sweep.train_flags):
        raise UserError('--protocol best_of retrains every cell briefly (--short_flags) and the best in full '
                        '(--train_flags); give both')
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


def group_name(group):
    method, space, dataset = group
    return f'{space}-{dataset}-{method}'


def retraining(genotype_path, dataset, seed, flags):
    return ['--arch_path', genotype_path, '--dataset', dataset, '--seed', str(seed)] + shlex.split(flags)


def run_task(folder, sweep, run):
    """The search of a run, then its retraining (protocol mean) or short retraining (protocol best_of)."""
    path = os.path.abspath(run_folder(folder, run))
    genotype = os.path.join(path, 'search', 'genotype.json')
    parts = [('train_search', 'search', ['--method', run.method, '--search_space', run.search_space, '--dataset',
                                         run.dataset, '--seed', str(run.seed)] + shlex.split(sweep.search_flags))]
    if sweep.protocol == 'best_of':
        parts.append(('train', 'short', retraining(genotype, run.dataset, run.seed, sweep.short_flags)[:2]
                      + ['--valid_portion', VALID_PORTION] + retraining(genotype, run.dataset, run.seed,
                                                                        sweep.short_flags)[2:]))
    elif sweep.train_flags:
        parts.append(('train', 'eval', retraining(genotype, run.dataset, run.seed, sweep.train_flags)))
    return Task(run.name, path, tuple(parts))


def best_run(folder, runs):
    """The run whose short retraining validated best (DARTS's choice), of `runs` that are all done."""
    def validated(run):
        return read_jsonl(os.path.join(run_folder(folder, run), 'short', 'metrics.jsonl'))[-1]['valid_top1']
    return max(runs, key=validated)


def tasks(folder, sweep):
    """Every job of the sweep so far: the runs', and with protocol best_of the full retraining of each
    method's best cell once all its seeds are done."""
    result = [run_task(folder, sweep, run) for run in sweep.runs()]
    if sweep.protocol == 'best_of':
        for group, runs in sweep.groups().items():
            if all(state(run_folder(folder, run)) == 'done' for run in runs):
                best = best_run(folder, runs)
                genotype = os.path.join(os.path.abspath(run_folder(folder, best)), 'search', 'genotype.json')
                result.append(Task(f'best {group_name(group)}', os.path.abspath(os.path.join(folder, 'best',
                                                                                             group_name(group))),
                                   (('train', 'eval', retraining(genotype, best.dataset, best.seed,
                                                                 sweep.train_flags)),)))
    return result


def state(path):
    """Of a task's folder: 'done', 'failed', 'interrupted' (a checkpoint, no end) or 'pending'."""
    for name, status in (('done.json', 'done'), ('failed.json', 'failed')):
        if os.path.isfile(os.path.join(path, name)):
            return status
    started = any(os.path.isfile(os.path.join(path, part, 'checkpoint.pt')) for part in ('search', 'short', 'eval'))
    return 'interrupted' if started else 'pending'


def last_log_line(path):
    """The last line of a part's captured stderr, or of its log.txt, for the report of a failure."""
    for name in ('stderr.txt', 'log.txt'):
        file = os.path.join(path, name)
        if os.path.isfile(file):
            with open(file, encoding='utf-8', errors='replace') as f:
                lines = [line.rstrip() for line in f if line.strip()]
            if lines:
                return lines[-1]
    return ''


class RunScripts:
    """What a submitit job runs: a Task's parts, each script in a process of its own, resumed from its
    checkpoint when one is there. On SLURM, submitit calls `checkpoint` before a preemption or a timeout: the
    script gets SIGTERM, saves where it is, and the job is queued again."""

    def __init__(self, task):
        self.task, self.process = task, None

    def _part(self, script, part, argv):
        path = os.path.join(self.task.folder, part)
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
        started = time.time()
        for script, part, argv in self.task.parts:
            code, path = self._part(script, part, argv)
            if code != 0:
                failure = {'part': part, 'exit_status': code, 'last_line': last_log_line(path)}
                write_json(os.path.join(self.task.folder, 'failed.json'), failure)
                raise RuntimeError(f'{self.task.name}: {script}.py ended with exit status {code}: '
                                   f'{failure["last_line"]}')
        write_json(os.path.join(self.task.folder, 'done.json'), {'seconds': time.time() - started})
        return self.task.name

    def checkpoint(self):
        submitit = _submitit()
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait()
        return submitit.helpers.DelayedSubmission(RunScripts(self.task))


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
    """The tasks not done yet; a failed one is tried again."""
    result = []
    for task in tasks(folder, sweep):
        if os.path.isfile(os.path.join(task.folder, 'failed.json')):
            os.remove(os.path.join(task.folder, 'failed.json'))
        if state(task.folder) != 'done':
            result.append(task)
    return result


def submit_slurm(folder, sweep, slurm_executor):
    """Every task not done, as one job array; returns the jobs. (With protocol best_of, the full retrainings
    of the best cells are tasks once their searches are done: run the sweep again then.)"""
    with slurm_executor.batch():
        jobs = [slurm_executor.submit(RunScripts(task)) for task in todo(folder, sweep)]
    return jobs


def run_local(folder, sweep, local_executor, parallel, report, poll_s=1.0):
    """Every task not done, at most `parallel` at a time, through submitit's local executor (with protocol
    best_of, a method's full retraining as soon as its searches are done); `report(line)` tells the progress.
    Returns the names of the tasks that failed."""
    running, failed = {}, []
    waiting = todo(folder, sweep)
    while waiting or running:
        if waiting and len(running) < parallel:
            while waiting and len(running) < parallel:
                task = waiting.pop(0)
                running[task.name] = (task, local_executor.submit(RunScripts(task)))
            report(progress_line(folder, sweep, len(running)))
        time.sleep(poll_s)
        for name, (task, job) in list(running.items()):
            if job.done():
                del running[name]
                if state(task.folder) != 'done':
                    failed.append(name)
                    report(f'{name} failed: {last_failure(task.folder)}')
        started = set(running) | set(failed) | {task.name for task in waiting}
        waiting += [task for task in tasks(folder, sweep) if task.name not in started and state(task.folder) != 'done']
    report(progress_line(folder, sweep, 0))
    return failed


def last_failure(path):
    failure_file = os.path.join(path, 'failed.json')
    if not os.path.isfile(failure_file):
        return 'the job ended without a result (see its submitit logs)'
    failure = json_of(failure_file)
    return f"{failure['part']} exited with status {failure['exit_status']}: {failure['last_line']}"


def progress_line(folder, sweep, running):
    """'N done, R running, F failed, P to go; about T left' from the tasks' folders."""
    states = [state(task.folder) for task in tasks(folder, sweep)]
    seconds = [json_of(os.path.join(task.folder, 'done.json'))['seconds'] for task, current in
               zip(tasks(folder, sweep), states) if current == 'done']
    total = len(states) + (len(sweep.groups()) - sum(task.name.startswith('best ') for task in tasks(folder, sweep))
                           if sweep.protocol == 'best_of' else 0)
    to_go = total - len(seconds) - states.count('failed') - running
    line = f'{len(seconds)} done, {running} running, {states.count("failed")} failed, {to_go} to go'
    if seconds and to_go + running:
        line += f'; about {format_seconds(statistics.fmean(seconds) * (to_go + running) / max(running, 1))} left'
    return line


def format_seconds(seconds):
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f'{hours}:{minutes:02d}:{seconds:02d}'


def json_of(path):
    with open(path, encoding='utf-8') as f:
        return json.load(f)


def status_lines(folder, sweep):
    """One line per task and the progress line, for `sweep.py --status`."""
    lines = []
    for task in tasks(folder, sweep):
        current = state(task.folder)
        detail = f': {last_failure(task.folder)}' if current == 'failed' else ''
        lines.append(f'{task.name:<48} {current}{detail}')
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
