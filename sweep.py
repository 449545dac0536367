"""Run a grid of searches (methods × seeds × search spaces × data sets), each optionally retrained, and tabulate
mean ± std over the seeds, on this machine or on a SLURM cluster through submitit.

    python sweep.py sweeps/s3 --methods darts,sdarts_rs --seeds 1-4 --search_spaces s3 --datasets cifar10
    python sweep.py sweeps/s3                  # again: skips the runs that are done, resumes the others
    python sweep.py --status sweeps/s3         # done, running, failed, and about how long is left
    python sweep.py --table sweeps/s3          # table.md, table.csv, comparison.png of the runs done so far
    python sweep.py sweeps/s3 ... --executor slurm --slurm_partition gpu --slurm_minutes 720 --dry
"""
import os

import sweep_table
import sweeps
import utils


def build_parser():
    parser = utils.ArgumentParser(description='Run a grid of searches and tabulate them (mean ± std over seeds).')
    parser.add_argument('folder', nargs='?', help='the sweep folder (created, or continued when it exists)')
    parser.add_argument('--status', metavar='FOLDER', help='print the state of every run of a sweep and exit')
    parser.add_argument('--table', metavar='FOLDER', help='write the table and plot of the runs done so far and exit')
    grid = parser.add_argument_group('the grid (a new sweep; a continued one keeps its own)')
    grid.add_argument('--methods', help='comma-separated --method presets of train_search.py, e.g. darts,pc_darts')
    grid.add_argument('--seeds', default='1', help='seeds, as 1,2,3 or 1-4 (default 1)')
    grid.add_argument('--search_spaces', default='darts', help='comma-separated --search_space values (default darts)')
    grid.add_argument('--datasets', default='cifar10', help='comma-separated --dataset values (default cifar10)')
    grid.add_argument('--search_flags', default='', metavar='FLAGS',
                      help='further flags for every train_search.py run, in quotes')
    grid.add_argument('--train_flags', default='', metavar='FLAGS',
                      help='flags for train.py, in quotes: each searched cell is then retrained with them '
                           '(default: no retraining); with --protocol best_of, the best cell of each method')
    grid.add_argument('--protocol', choices=sweeps.PROTOCOLS, default='mean',
                      help="mean: mean and std over the seeds; best_of: DARTS's protocol, each cell retrained "
                           'briefly (--short_flags) and validated on 10%% of the training set, the best retrained in '
                           'full (--train_flags)')
    grid.add_argument('--short_flags', default='', metavar='FLAGS',
                      help='best_of: flags for the short retraining of every cell, in quotes (DARTS: --epochs 100)')
    run = parser.add_argument_group('where the runs go')
    run.add_argument('--executor', choices=('local', 'slurm'), default='local',
                     help='local: processes on this machine; slurm: one job array on a SLURM cluster')
    run.add_argument('--parallel', type=utils.bounded(int, 1), default=1,
                     help='local: runs at a time (one per GPU; keep 1 on a CPU)')
    run.add_argument('--slurm_partition', help='slurm: the partition')
    run.add_argument('--slurm_minutes', type=utils.bounded(int, 1), default=24 * 60,
                     help='slurm: time limit of a job in minutes; a job that reaches it is requeued and resumes')
    run.add_argument('--slurm_gpus', type=utils.bounded(int, 0), default=1, help='slurm: GPUs per run')
    run.add_argument('--slurm_parallelism', type=utils.bounded(int, 1), default=16,
                     help='slurm: runs of the array at a time')
    run.add_argument('--dry', action='store_true',
                     help='slurm: write the sbatch script into the folder and submit nothing')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if sum(value is not None for value in (args.folder, args.status, args.table)) != 1:
        raise utils.UserError('give exactly one of: a sweep folder to run, --status FOLDER or --table FOLDER')
    args.folder, args.status, args.table = (os.path.abspath(path) if path else path
                                            for path in (args.folder, args.status, args.table))
    if args.status:
        lines = sweeps.status_lines(args.status, sweeps.load_sweep(args.status))
        print('\n'.join(lines))
        return lines
    if args.table:
        return tabulate(args.table)
    sweep = sweep_of(args)
    if args.executor == 'slurm':
        return submit(args, sweep)
    failed = sweeps.run_local(args.folder, sweep, sweeps.executor('local', args.folder, None), args.parallel, print)
    tabulate(args.folder)
    if failed:
        raise utils.UserError(f'{len(failed)} run(s) failed: {", ".join(failed)}; see sweep.py --status {args.folder}')
    return failed


def sweep_of(args):
    """The sweep of the folder (continued) or of the grid flags (new), saved as sweep.json."""
    if args.methods is None:
        return sweeps.load_sweep(args.folder)
    sweep = sweeps.Sweep(tuple(args.methods.split(',')), tuple(args.search_spaces.split(',')),
                         tuple(args.datasets.split(',')), sweeps.seeds_of(args.seeds), args.search_flags,
                         args.train_flags, args.protocol, args.short_flags)
    sweeps.save_sweep(args.folder, sweep)
    return sweep


def submit(args, sweep):
    if not args.slurm_partition:
        raise utils.UserError('--executor slurm needs --slurm_partition')
    slurm = sweeps.slurm_parameters(args.slurm_partition, args.slurm_minutes, args.slurm_gpus, args.slurm_parallelism)
    if args.dry:
        path = os.path.join(args.folder, 'sweep.sbatch')
        with open(path, 'w', encoding='utf-8') as f:
            f.write(sweeps.sbatch_text(args.folder, slurm, len(sweeps.todo(args.folder, sweep))))
        print(f'wrote {path}; nothing was submitted')
        return path
    jobs = sweeps.submit_slurm(args.folder, sweep, sweeps.executor('slurm', args.folder, slurm))
    print(f'submitted {len(jobs)} run(s) as a job array; follow them with: python sweep.py --status {args.folder}')
    return jobs


def tabulate(folder):
    rows = sweep_table.table(folder, sweeps.load_sweep(folder))
    paths = sweep_table.write_table(folder, rows)
    print(open(paths[0], encoding='utf-8').read(), end='')
    print(f'wrote {", ".join(paths)}')
    return rows


if __name__ == '__main__':
    utils.run_cli(main)
