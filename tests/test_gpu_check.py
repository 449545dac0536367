"""gpu_check.py: its dry run does every phase at toy size on the CPU, as the GPU check will on a GPU."""
import json

import pytest
import torch

import gpu_check
from utils import UserError


@pytest.mark.slow
def test_the_dry_run_does_every_phase_and_writes_each_ones_json(in_tmp, capsys):
    results = gpu_check.main(['--dry', '--output', 'check'])
    assert list(results) == list(gpu_check.PHASES)
    for phase, result in results.items():
        assert result['ok'], (phase, result)
        assert json.loads((in_tmp / 'check' / f'{phase}.json').read_text()) == result
    assert results['precision']['gradient_cosine'] >= 0.999 and results['recompiles']['graphs'] == 2
    assert results['resume']['deterministic']['identical'] and results['resume']['default']['identical']
    assert results['resume']['deterministic_slowdown'] > 0
    gdas = next(row for row in results['syncs']['cases'] if row['case'] == 'gdas')
    assert gdas['host_reads_per_step'] == gdas['allowed'] == 3
    assert {row['case'] for row in results['speed']['cases']} == {
        'search darts', 'search darts (2nd order)', 'search pc_darts', 'search pc_darts (2nd order)',
        'train DARTS_V2 b8'}
    projected = (in_tmp / 'check' / 'projections.md').read_text().splitlines()
    assert len(projected) == 2 + len(results['projections']['cases'])
    assert projected[-2].startswith('| PC-DARTS ImageNet search | loader ') and projected[-2].endswith(' on eight |')
    table = capsys.readouterr().out
    assert all(f'{phase} ' in table for phase in gpu_check.PHASES)


def test_projected_hours_add_up_each_stage_warm_up_and_validation_pass(monkeypatch):
    """With each whole search step timed at 20 ms, each weight step at 10 ms and each validation batch at 5 ms
    (batch 8 in the dry run), the hours are the epochs' sums."""
    seconds = {'step': 0.02, 'weight_step': 0.01, 'validate': 0.005}
    monkeypatch.setattr(gpu_check.utils, 'timed', lambda step, *_: seconds.get(step.__name__, 0.01))
    rows = {row['case']: row for row in gpu_check.projections(torch.device('cpu'), True, None)['cases']}
    search = 3125 * (15 * 0.01 + 35 * 0.02) + 50 * 3125 * 0.005  # 25,000 / 8 batches, warm-up 15 of 50 epochs
    assert rows['nas_bench_201 pc_darts']['hours'] == pytest.approx(search / 3600)
    stage = 3125 * (10 * 0.01 + 40 * 0.02) + 50 * 3125 * 0.005  # DrNAS: two stages of 50 epochs, warm-up 10
    assert len(rows['nas_bench_201 drnas']['step_images_per_s']) == 2
    assert rows['nas_bench_201 drnas']['hours'] == pytest.approx(2 * stage / 3600)
    assert rows['NAS-Bench-201 sweep, 4 seeds']['hours'] == pytest.approx(
        4 * sum(rows[f'nas_bench_201 {method}']['hours'] for method in gpu_check.NB201_SWEEP))
    imagenet = 16_015 * (35 * 0.01 + 15 * 0.02) + 50 * 4004 * 0.005  # 128,117 and 32,029 images, warm-up 35
    assert rows['PC-DARTS ImageNet search']['hours_one_gpu'] == pytest.approx(imagenet / 3600)
    assert rows['PC-DARTS ImageNet search']['hours_eight_gpus'] == pytest.approx(imagenet / 3600 / 8)
    # Retraining's batches of 8 at 10 ms (800 images a second), its inference's (a function named step) at 20 ms:
    # four short retrainings on 45,000 images, each epoch validated on 5,000; one long one on 50,000, tested on 10,000.
    retraining = 4 * 100 * (45_000 / 800 + 5_000 / 400) + 600 * (50_000 / 800 + 10_000 / 400)
    assert rows['DARTS best of four']['hours'] == pytest.approx(4 * rows['darts --unrolled']['hours']
                                                                + retraining / 3600)
    # ImageNet's: 250 epochs of 1,281,167 images, each tested on 50,000, or the loader's time if that is longer.
    imagenet = rows['ImageNet retraining, 250 epochs']
    loaded = 250 * 1_281_167 / imagenet['loader_images_per_s']['device']
    assert imagenet['hours_one_gpu'] == pytest.approx(max(250 * (1_281_167 / 800 + 50_000 / 400), loaded) / 3600)
    assert imagenet['hours_eight_gpus'] == pytest.approx(imagenet['hours_one_gpu'] / 8)
    table = gpu_check.projections_markdown(rows.values())
    assert '| ImageNet retraining, 250 epochs | retraining 800, loader ' in table


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message of a machine without CUDA')
def test_without_a_gpu_it_says_to_use_dry():
    with pytest.raises(UserError, match='there is no CUDA device here; run the check on a GPU machine, or give --dry'):
        gpu_check.main(['--output', 'never'])


def test_a_projection_that_fails_is_reported_and_the_others_still_measured(monkeypatch):
    search_hours = gpu_check.search_hours

    def failing(flags, *rest):
        if '--unrolled' in flags:
            raise RuntimeError('CUDA out of memory')
        return search_hours(flags, *rest)
    monkeypatch.setattr(gpu_check, 'search_hours', failing)
    result = gpu_check.projections(torch.device('cpu'), True, None)
    rows = {row['case']: row for row in result['cases']}
    assert not result['ok'] and rows['darts --unrolled']['error'] == 'RuntimeError: CUDA out of memory'
    assert rows['DARTS best of four']['error'] == 'RuntimeError: darts --unrolled failed'
    assert rows['NAS-Bench-201 sweep, 4 seeds']['hours'] > 0 and rows['PC-DARTS ImageNet search']['hours_one_gpu'] > 0
    assert '| darts --unrolled | - | failed: RuntimeError: CUDA out of memory |' in gpu_check.projections_markdown(
        result['cases'])
