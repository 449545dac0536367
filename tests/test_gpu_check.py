"""gpu_check.py: its dry run does every phase at toy size on the CPU, as the GPU check will on a GPU."""
import json

import pytest
import torch

import gpu_check
from utils import UserError


@pytest.mark.slow
def test_the_dry_run_does_every_phase_and_writes_each_ones_json(in_tmp, capsys):
    stale = in_tmp / 'check' / 'resume-default-resumed'  # left by a run cut short: a second call must not stop early
    stale.mkdir(parents=True)
    (stale / 'log.txt').write_text('train epoch 1/2 step 9/12\n')
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
        'train DARTS_V2 b8', 'curvature darts'}
    curvature = next(row for row in results['speed']['cases'] if row['case'] == 'curvature darts')
    assert curvature['every_epoch_of_50_adds_h'] == pytest.approx(50 * curvature['seconds_per_measurement'] / 3600)
    projected = (in_tmp / 'check' / 'projections.md').read_text().splitlines()
    assert len(projected) == 2 + len(results['projections']['cases'])
    assert projected[-2].startswith('| PC-DARTS ImageNet search | loader ') and projected[-2].endswith(' on eight |')
    table = capsys.readouterr().out
    assert all(f'{phase} ' in table for phase in gpu_check.PHASES)


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message of a machine without CUDA')
def test_without_a_gpu_it_says_to_use_dry():
    with pytest.raises(UserError, match='there is no CUDA device here; run the check on a GPU machine, or give --dry'):
        gpu_check.main(['--output', 'never'])
