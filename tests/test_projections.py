"""projections.py: the hours of the README's runs, added up from measured step rates (timed steps replaced here
by fixed times), and a case that fails reported in its row."""
import pytest
import torch

import bench
import projections

CPU = bench.Speed(None, False, False, torch.device('cpu'))


def test_projected_hours_add_up_each_stage_warm_up_and_validation_pass(monkeypatch):
    """With each whole search step timed at 20 ms, each weight step at 10 ms and each validation batch at 5 ms
    (batch 8 in the dry run), the hours are the epochs' sums."""
    seconds = {'step': 0.02, 'weight_step': 0.01, 'validate': 0.005}
    monkeypatch.setattr(projections.utils, 'timed', lambda step, *_: seconds.get(step.__name__, 0.01))
    rows = {row['case']: row for row in projections.project(CPU, lambda: None, True, None)['cases']}
    search = 3125 * (15 * 0.01 + 35 * 0.02) + 50 * 3125 * 0.005  # 25,000 / 8 batches, warm-up 15 of 50 epochs
    assert rows['nas_bench_201 pc_darts']['hours'] == pytest.approx(search / 3600)
    stage = 3125 * (10 * 0.01 + 40 * 0.02) + 50 * 3125 * 0.005  # DrNAS: two stages of 50 epochs, warm-up 10
    assert len(rows['nas_bench_201 drnas']['step_images_per_s']) == 2
    assert rows['nas_bench_201 drnas']['hours'] == pytest.approx(2 * stage / 3600)
    assert rows['NAS-Bench-201 sweep, 4 seeds']['hours'] == pytest.approx(
        4 * sum(rows[f'nas_bench_201 {method}']['hours'] for method in projections.NB201_SWEEP))
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
    table = projections.markdown(rows.values())
    assert '| ImageNet retraining, 250 epochs | retraining 800, loader ' in table


def test_a_projection_that_fails_is_reported_and_the_others_still_measured(monkeypatch):
    search_hours = projections.search_hours

    def failing(flags, *rest):
        if '--unrolled' in flags:
            raise RuntimeError('CUDA out of memory')
        return search_hours(flags, *rest)
    monkeypatch.setattr(projections, 'search_hours', failing)
    result = projections.project(CPU, lambda: None, True, None)
    rows = {row['case']: row for row in result['cases']}
    assert not result['ok'] and rows['darts --unrolled']['error'] == 'RuntimeError: CUDA out of memory'
    assert rows['DARTS best of four']['error'] == 'RuntimeError: darts --unrolled failed'
    assert rows['NAS-Bench-201 sweep, 4 seeds']['hours'] > 0 and rows['PC-DARTS ImageNet search']['hours_one_gpu'] > 0
    assert '| darts --unrolled | - | failed: RuntimeError: CUDA out of memory |' in projections.markdown(
        result['cases'])
