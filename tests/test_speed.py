"""Every speed option computes the same function as the plain float32 path."""
import json

import pytest
import torch
from conftest import load_script, supernet

import genotypes
import precision
import model
import utils
from architect import SearchObjective

bench = load_script('bench')
train = load_script('train')
train_search = load_script('train_search')


def relative_error(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def eval_net():
    torch.manual_seed(0)
    return model.NetworkCIFAR(8, 10, 5, True, genotypes.DARTS_V2).eval()


def test_bf16_logits_are_within_one_percent_of_float32():
    net, x = eval_net(), torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        reference = net(x)[0]
        with precision.autocast_factory(torch.bfloat16, torch.device('cpu'))():
            low = net(x)[0]
    assert low.dtype == torch.bfloat16 and relative_error(low, reference) < 1e-2
    torch.manual_seed(0)
    arch = supernet(16, 10, 3, partial_channels=2, alpha_attention=True, image_size=16)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        reference = arch.net(x, arch.weights())
        with precision.autocast_factory(torch.bfloat16, torch.device('cpu'))():
            weights = arch.weights()
            low = arch.net(x, weights)
    assert relative_error(low, reference) < 1e-2
    assert weights['normal'].ops.dtype == torch.float32


def test_channels_last_computes_the_same_function():
    net, x = eval_net(), torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        reference = net(x)[0]
        net.to(memory_format=torch.channels_last)
        assert (net(x.contiguous(memory_format=torch.channels_last))[0] - reference).abs().max() < 1e-6
    torch.manual_seed(0)
    arch = supernet(8, 10, 3, partial_channels=4, image_size=16)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        reference = arch.net(x, arch.weights())
        arch.net.to(memory_format=torch.channels_last)
        logits = arch.net(x.contiguous(memory_format=torch.channels_last), arch.weights())
        assert (logits - reference).abs().max() < 1e-6


@pytest.mark.parametrize('options', [{}, {'partial_channels': 2}, {'location': 'after_every'}])
def test_skipping_zero_weighted_ops_and_edges_changes_nothing(options):
    torch.manual_seed(0)
    arch = supernet(16, 10, 3, image_size=16, hd_on_weights=True, **options)
    search_net = arch.net
    hard = SearchObjective(arch).arch_weights('weights')
    assert sum(len(ops) for ops in hard['normal'].active) == 8
    every_op = {cell: w.replace(active=None) for cell, w in hard.items()}
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert (search_net(x, hard) - search_net(x, every_op)).abs().max() <= 1e-6


def test_fp16_search_is_refused():
    with pytest.raises(utils.UserError, match='--amp fp16 is for train.py and test.py'):
        train_search.main(['--dataset', 'synthetic', '--amp', 'fp16'])


@pytest.mark.slow
def test_compiled_model_matches_eager():
    torch.manual_seed(0)
    net = model.NetworkCIFAR(4, 10, 3, False, genotypes.DARTS_V2).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert (torch.compile(net)(x)[0] - net(x)[0]).abs().max() < 1e-5


@pytest.mark.slow
def test_bf16_training_reaches_the_float32_accuracy(in_tmp):
    common = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '1000', '--synthetic_test_size',
              '400', '--num_classes', '4', '--init_channels', '4', '--layers', '3', '--batch_size', '32', '--epochs',
              '3', '--device', 'cpu', '--report_freq', '1000']
    full = train.main(common + ['--amp', 'off', '--exp_path', 'fp32'])
    half = train.main(common + ['--amp', 'bf16', '--exp_path', 'bf16'])
    print(f"test accuracy: float32 {full['test_top1']:.2f}, bf16 {half['test_top1']:.2f}")
    assert abs(full['test_top1'] - half['test_top1']) <= 1.0 and full['test_top1'] > 80


@pytest.mark.slow
def test_bench_runs_on_the_cpu_and_prints_the_table(in_tmp, capsys):
    report = bench.main(['--tiny', '--steps', '1', '--warmup', '0', '--device', 'cpu', '--methods',
                         'darts,pc_darts', '--output', 'bench.json'])
    printed = capsys.readouterr().out
    names = [row['case'] for row in report['results']]
    assert names == ['search darts', 'search darts (2nd order)', 'search pc_darts',
                     'search pc_darts (2nd order)', 'train DARTS_V2 b8', 'infer DARTS_V2 b8', 'loader b8',
                     'loader imagenet jpeg, decoded in workers b8', 'loader imagenet jpeg, decoded in the device b8']
    assert all(name in printed for name in names) and 'images/s' in printed
    saved = json.loads((in_tmp / 'bench.json').read_text())
    assert saved['results'] == report['results']
    for row in saved['results']:
        assert row['images_per_s'] * row['ms_per_step'] / 1000 == pytest.approx(row['batch'])
    baseline = bench.main(['--tiny', '--steps', '1', '--warmup', '0', '--device', 'cpu', '--cases', 'train',
                           '--baseline', '--amp', 'bf16', '--output', 'baseline.json'])
    assert baseline['baseline'] and baseline['amp'] == 'float32' and not baseline['channels_last']


def test_bench_reports_the_median_of_the_timed_steps_after_the_warm_up(monkeypatch):
    now, durations = [0.0], iter([5.0, 1.0, 3.0, 2.0])  # a slow first (warm-up) step, then three timed ones

    def step():
        now[0] += next(durations)
    monkeypatch.setattr(utils.time, 'perf_counter', lambda: now[0])
    assert utils.timed(step, lambda: None, steps=3, warmup=1) == 2.0


def test_the_benchmarked_search_step_is_a_real_one():
    """It moves both the architecture (first, on its batch) and the weights, as a search step does."""
    speed = bench.Speed(None, False, False, torch.device('cpu'))
    batch_size, step, arch, *_ = bench.search_case('pc_darts', [], bench.TINY, True, speed)
    before = {name: value.clone() for name, value in arch.net.state_dict().items()}
    step()
    after = arch.net.state_dict()
    assert batch_size == 8 and not torch.equal(before['alphas_normal'], after['alphas_normal'])
    assert not torch.equal(before['classifier.weight'], after['classifier.weight'])


def test_bench_does_not_time_what_the_scripts_refuse_and_names_its_setting(in_tmp, capsys):
    report = bench.main(['--tiny', '--steps', '1', '--warmup', '0', '--device', 'cpu', '--methods', 'darts',
                         '--cases', 'search', '--amp', 'fp16', '--output', 'bench.json'])
    assert [row.get('refused') for row in report['results']] == [
        '--amp fp16 is for train.py and test.py; search with --amp bf16 or off'] * 2
    assert 'not timed: --amp fp16 is for train.py' in capsys.readouterr().out
    assert {'device', 'torch', 'tf32_matmul', 'tf32_cudnn', 'cudnn_autotuning', 'amp'} <= set(report)
    assert report['amp'] == 'fp16' and report['device'] != 'cpu'
