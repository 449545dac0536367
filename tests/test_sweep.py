"""sweep.py: a grid of searches through submitit's local executor on generated data, its table, status,
resumption, failures, and the sbatch script of a SLURM sweep."""
import csv
import json
import os
import sys

import pytest
from conftest import load_script

import sweeps
import utils

sweep = load_script('sweep')

TINY = ('--image_size 16 --synthetic_train_size 64 --synthetic_test_size 32 --num_classes 4 --init_channels 8 '
        '--layers 3 --batch_size 32 --epochs 2 --device cpu')
RETRAIN = ('--image_size 16 --synthetic_train_size 64 --synthetic_test_size 32 --num_classes 4 --init_channels 8 '
           '--layers 3 --batch_size 32 --epochs 1 --device cpu')


@pytest.mark.slow
def test_a_sweep_runs_its_grid_tabulates_it_and_reports_a_failed_run(in_tmp, capsys):
    # DARTS- cannot search S4 (no skip_connect): its runs fail, the others go on.
    argv = ['grid', '--methods', 'darts,darts_minus', '--seeds', '1-2', '--search_spaces', 's4', '--datasets',
            'synthetic', '--search_flags', TINY, '--train_flags', RETRAIN]
    with pytest.raises(utils.UserError, match=r'2 run\(s\) failed: s4-synthetic-darts_minus-seed1, '
                                              r's4-synthetic-darts_minus-seed2; see sweep.py --status \S*grid'):
        sweep.main(argv)
    out = capsys.readouterr().out
    assert 's4-synthetic-darts_minus-seed1 failed: search exited with status 2: error: --auxiliary_skip' in out
    assert '2 done, 0 running, 2 failed, 0 to go' in out
    folder = in_tmp / 'grid'
    for seed in (1, 2):
        run = folder / 'runs' / f's4-synthetic-darts-seed{seed}'
        assert (run / 'done.json').is_file() and (run / 'eval' / 'weights.pt').is_file()
        assert json.loads((run / 'search' / 'args.json').read_text())['seed'] == seed
    rows = list(csv.DictReader(open(folder / 'table.csv')))
    assert [(row['method'], row['runs']) for row in rows] == [('darts', '2')]
    finals = [json.loads(line)['valid_top1'] for seed in (1, 2)
              for line in (folder / 'runs' / f's4-synthetic-darts-seed{seed}' / 'search' / 'metrics.jsonl')
              .read_text().splitlines()[-1:]]
    assert float(rows[0]['final_valid_top1_mean']) == pytest.approx(sum(finals) / 2)
    assert 'test_top1_mean' in rows[0] and float(rows[0]['params_M_mean']) > 0
    assert (folder / 'table.md').read_text().startswith('| method | space | data set | runs | final_valid_top1')
    assert (folder / 'comparison.png').stat().st_size > 1000

    status = sweep.main(['--status', 'grid'])
    assert status[0].startswith('s4-synthetic-darts-seed1') and status[0].endswith('done')
    assert 'failed: search exited with status 2' in status[2]
    # Run again: the finished runs are skipped, the failed ones tried again (and fail again).
    done = (folder / 'runs' / 's4-synthetic-darts-seed1' / 'done.json').stat().st_mtime_ns
    with pytest.raises(utils.UserError, match=r'2 run\(s\) failed'):
        sweep.main(['grid'])
    assert (folder / 'runs' / 's4-synthetic-darts-seed1' / 'done.json').stat().st_mtime_ns == done


def test_an_interrupted_run_resumes_and_a_new_one_starts(in_tmp, monkeypatch):
    commands = []

    class Finished:
        def __init__(self, command, **kwargs):
            commands.append(command)

        def wait(self):
            return 0
    monkeypatch.setattr(sweeps.subprocess, 'Popen', Finished)
    run = sweeps.Run('darts', 'darts', 'synthetic', 3)
    search = in_tmp / 'runs' / run.name / 'search'
    search.mkdir(parents=True)
    (search / 'checkpoint.pt').write_bytes(b'')
    assert sweeps.state(str(search.parent)) == 'interrupted'
    sweep_flags = sweeps.Sweep(('darts',), ('darts',), ('synthetic',), (3,), '--epochs 2', '--epochs 1')
    sweeps.RunScripts(sweeps.run_task(str(in_tmp), sweep_flags, run))()
    assert commands[0][2:] == ['--resume', str(search)]
    assert commands[1][2:4] == ['--arch_path', os.path.join(str(in_tmp), 'runs', run.name, 'search', 'genotype.json')]
    assert '--exp_path' in commands[1] and sweeps.state(str(search.parent)) == 'done'


def test_a_slurm_dry_run_writes_the_sbatch_script_of_one_job_array(in_tmp):
    path = sweep.main(['grid', '--methods', 'darts,pc_darts', '--seeds', '1-4', '--executor', 'slurm',
                       '--slurm_partition', 'gpu', '--slurm_minutes', '720', '--slurm_gpus', '1',
                       '--slurm_parallelism', '3', '--dry'])
    text = open(path).read()
    for line in ('#SBATCH --array=0-7%3', '#SBATCH --partition=gpu', '#SBATCH --time=720',
                 '#SBATCH --gpus-per-node=1', '#SBATCH --signal=USR2@120', '-m submitit.core._submit'):
        assert line in text, line
    with pytest.raises(utils.UserError, match='there is no srun here; --dry writes the sbatch script instead'):
        sweep.main(['grid', '--executor', 'slurm', '--slurm_partition', 'gpu'])


def test_bad_sweep_arguments_give_one_sentence(in_tmp, monkeypatch):
    with pytest.raises(utils.UserError, match='give exactly one of'):
        sweep.main([])
    with pytest.raises(utils.UserError, match='holds no sweep.json'):
        sweep.main(['--status', 'nowhere'])
    with pytest.raises(utils.UserError, match="--seeds 'a-b'"):
        sweep.main(['grid', '--methods', 'darts', '--seeds', 'a-b'])
    with pytest.raises(utils.UserError, match='--executor slurm needs --slurm_partition'):
        sweep.main(['grid', '--methods', 'darts', '--executor', 'slurm'])
    with pytest.raises(utils.UserError, match='--protocol best_of retrains every cell briefly'):
        sweep.main(['grid', '--methods', 'darts', '--protocol', 'best_of', '--train_flags', '--epochs 1'])
    monkeypatch.setitem(sys.modules, 'submitit', None)  # as if it were not installed
    with pytest.raises(utils.UserError, match='install it with "pip install submitit"'):
        sweep.main(['grid', '--methods', 'darts'])


@pytest.mark.slow
def test_darts_protocol_retrains_the_cell_that_validated_best_in_full(in_tmp):
    sweep.main(['grid', '--methods', 'darts', '--seeds', '1-2', '--search_spaces', 'darts', '--datasets', 'synthetic',
                '--search_flags', TINY, '--protocol', 'best_of', '--short_flags', RETRAIN, '--train_flags', RETRAIN])
    folder = in_tmp / 'grid'
    validated = {seed: json.loads((folder / 'runs' / f'darts-synthetic-darts-seed{seed}' / 'short' / 'metrics.jsonl')
                                  .read_text().splitlines()[-1])['valid_top1'] for seed in (1, 2)}
    short_args = json.loads((folder / 'runs' / 'darts-synthetic-darts-seed1' / 'short' / 'args.json').read_text())
    assert short_args['valid_portion'] == 0.1  # DARTS's choice is made on held-out training images
    best_seed = max(validated, key=validated.get)
    best = json.loads((folder / 'best' / 'darts-synthetic-darts' / 'eval' / 'args.json').read_text())
    assert best['arch_path'].endswith(f'darts-synthetic-darts-seed{best_seed}/search/genotype.json')
    assert best['valid_portion'] == 0 and best['seed'] == best_seed
    row = next(csv.DictReader(open(folder / 'table.csv')))
    assert int(row['best_seed']) == best_seed and float(row['best_test_top1']) >= 0
    assert '| best seed | its test_top1 |' in (folder / 'table.md').read_text()
    status = sweep.main(['--status', 'grid'])
    assert status[-2].startswith('best darts-synthetic-darts') and status[-2].endswith('done')
    assert status[-1] == '3 done, 0 running, 0 failed, 0 to go'
