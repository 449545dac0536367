"""The CUDA paths of every script: bf16, fp16 with its gradient scaler, channels_last, --compile, the
non-finite loss check, a one-process NCCL job and resume. Skipped without a CUDA device; on a GPU machine
run them with `python -m pytest -q -m cuda`."""
import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, finish, metrics, run_script, wait_for_log
from test_streaming import grey_levels, write_jpegs

import data
import loaders
import methods
import streaming
import successors  # noqa: F401  (registers the successor methods with methods.py)

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')]

# 10 classes at 16x16: 32 steps of 64 images per epoch.
DATA = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '2048', '--synthetic_test_size',
        '256', '--device', 'cuda', '--report_freq', '10']
TRAIN = DATA + ['--init_channels', '8', '--layers', '5', '--batch_size', '64', '--auxiliary', '--cutout']
SEARCH = DATA + ['--init_channels', '8', '--layers', '5', '--batch_size', '32', '--epochs', '2']


def run(script, args, cwd):
    return finish(run_script(script, args, cwd))


def checkpoint(folder):
    return torch.load(folder / 'checkpoint.pt', weights_only=True)


@pytest.mark.parametrize('amp', ['bf16', 'fp16', 'off'])
def test_train_and_test_on_cuda_in_each_precision(amp, in_tmp):
    run('train', TRAIN + ['--epochs', '3', '--amp', amp, '--exp_path', 'run'], in_tmp)
    rows = metrics(in_tmp / 'run')
    assert rows[-1]['train_loss'] < rows[0]['train_loss'] and rows[-1]['test_top1'] > 50.0
    assert rows[-1]['peak_memory_mb'] > 0
    saved = checkpoint(in_tmp / 'run')
    assert saved['args']['channels_last'] is True  # the CUDA default
    assert ('scale' in saved['scaler']) == (amp == 'fp16')  # fp16's gradient scaler is saved and restored
    run('test', ['--model_path', 'run/checkpoint.pt', '--amp', amp, '--output', 'test.json'], in_tmp)
    result = json.loads((in_tmp / 'test.json').read_text())
    assert result['top1'] == pytest.approx(rows[-1]['test_top1'], abs=1.0)


def test_compiled_network_trains_and_tests_like_the_eager_one(in_tmp):
    run('train', TRAIN + ['--epochs', '1', '--compile', '--no_channels_last', '--exp_path', 'run'], in_tmp)
    run('test', ['--model_path', 'run/weights.pt', '--output', 'eager.json'], in_tmp)
    run('test', ['--model_path', 'run/weights.pt', '--compile', '--output', 'compiled.json'], in_tmp)
    eager, compiled = (json.loads((in_tmp / name).read_text()) for name in ('eager.json', 'compiled.json'))
    assert compiled['loss'] == pytest.approx(eager['loss'], rel=1e-2)
    assert abs(compiled['top1'] - eager['top1']) <= 1.0


@pytest.mark.parametrize('script', ['train', 'train_search'])
def test_a_diverging_cuda_run_stops_without_saving(script, in_tmp):
    flags = (TRAIN if script == 'train' else SEARCH) + ['--learning_rate', '1e12', '--epochs', '2', '--exp_path', 'run']
    process = run_script(script, flags, in_tmp)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 2 and 'the loss became non-finite at epoch 0, step' in err, err
    assert not (in_tmp / 'run' / 'checkpoint.pt').exists()


def test_sigterm_on_cuda_exits_143_and_the_run_resumes_to_its_end(in_tmp):
    process = run_script('train', TRAIN + ['--epochs', '3', '--exp_path', 'run'], in_tmp)
    wait_for_log(in_tmp / 'run' / 'log.txt', r'train epoch 1/3 step 11/', process)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 143, err
    assert checkpoint(in_tmp / 'run')['epoch'] == 1
    run('train', TRAIN + ['--epochs', '3', '--exp_path', 'run', '--resume'], in_tmp)
    assert [row['epoch'] for row in metrics(in_tmp / 'run')] == [0, 1, 2]


def torchrun(script, args, cwd):
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=1',
               os.path.join(ROOT, f'{script}.py'), *args]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_one_process_nccl_job_trains_searches_and_tests(in_tmp):
    finish(torchrun('train', TRAIN + ['--epochs', '2', '--sync_bn', '--exp_path', 'run'], in_tmp))
    assert '1 process(es) of batch 64' in (in_tmp / 'run' / 'log.txt').read_text()
    finish(torchrun('test', ['--model_path', 'run/checkpoint.pt', '--output', 'test.json'], in_tmp))
    assert json.loads((in_tmp / 'test.json').read_text())['images'] == 256
    finish(torchrun('train_search', SEARCH + ['--partial_channels', '2', '--exp_path', 'search'], in_tmp))
    assert (in_tmp / 'search' / 'genotype.json').is_file()


@pytest.mark.parametrize('flags', [['--amp', 'bf16'], ['--amp', 'off', '--unrolled']], ids=['bf16', 'unrolled'])
def test_a_search_learns_and_its_cell_retrains_on_cuda(flags, in_tmp):
    run('train_search', SEARCH + flags + ['--exp_path', 'search'], in_tmp)
    rows = metrics(in_tmp / 'search')
    assert [row['epoch'] for row in rows] == [0, 1] and rows[-1]['valid_top1'] > 10.0
    run('train', TRAIN + ['--epochs', '1', '--arch_path', 'search/genotype.json', '--exp_path', 'eval'], in_tmp)


def test_bench_runs_every_case_on_cuda(in_tmp):
    run('bench', ['--tiny', '--steps', '2', '--warmup', '1', '--device', 'cuda', '--output', 'bench.json'], in_tmp)
    rows = json.loads((in_tmp / 'bench.json').read_text())['results']
    assert rows and all(row['images_per_s'] > 0 and row['peak_memory_mb'] > 0 for row in rows)


def small(name, preset):
    """A preset's flags at the size of these tests: C = 16 (attention needs that many channels), or a multiple
    of every stage's partial channels; a search in stages gets stages of 3, 4, 5 cells (3 each where a stage
    continues the last one's supernet)."""
    channels = math.lcm(16, *preset.get('stage_partial_channels', ()))
    flags = ['--method', name, '--init_channels', str(channels)]
    if 'stage_layers' in preset:
        depths = [3 if preset.get('stage_continue') else 3 + i for i in range(len(preset['stage_layers']))]
        flags += ['--stage_layers', ','.join(map(str, depths))]
    return flags


# Every --method preset (a new method's comes along), and the options that are not presets.
METHOD_RUNS = {name: small(name, preset) for name, preset in methods.presets().items()}
METHOD_RUNS.update({'cost': ['--cost_penalty', '1'],
                    'darts_pt': ['--selection', 'pt', '--pt_interval', '1', '--pt_batches', '2']})


@pytest.mark.parametrize('flags', METHOD_RUNS.values(), ids=METHOD_RUNS.keys())
def test_every_method_runs_on_cuda_with_tensorboard(flags, in_tmp):
    staged = '--stage_layers' in flags
    search = SEARCH[:SEARCH.index('--layers')] + SEARCH[SEARCH.index('--layers') + 2:] if staged else SEARCH
    run('train_search', search + flags + ['--exp_path', 'search', '--tensorboard'], in_tmp)
    rows = metrics(in_tmp / 'search')
    assert rows and all(row['train_loss'] == row['train_loss'] for row in rows)  # no NaN
    assert (in_tmp / 'search' / 'genotype.json').is_file() and os.listdir(in_tmp / 'search' / 'tensorboard')


def test_weights_trained_on_cuda_export_and_time_on_cuda(in_tmp):
    run('train', TRAIN + ['--epochs', '1', '--exp_path', 'run'], in_tmp)
    for ending in ('onnx', 'pt2'):
        run('test', ['--model_path', 'run/checkpoint.pt', '--export', f'net.{ending}'], in_tmp)
        run('bench', ['--latency', f'net.{ending}', '--batch_sizes', '16', '--steps', '2', '--warmup', '1',
                      '--device', 'cuda', '--output', f'{ending}.json'], in_tmp)
        rows = json.loads((in_tmp / f'{ending}.json').read_text())['results']
        assert [row['batch'] for row in rows] == [1, 16] and all(row['ms_per_step'] > 0 for row in rows)


def test_jpeg_decoded_by_nvjpeg_matches_pil_and_the_crops_repeat(tmp_path):
    """The device path on CUDA: nvJPEG's batched decode and the resize of ImageNet's evaluation against PIL in the
    workers (another IDCT: a few grey levels apart at most), and the training crops drawn again for a resumed
    epoch."""
    write_jpegs(tmp_path)
    batches = {}
    for decoder in ('workers', 'device'):
        splits = data.load_dataset(data.DataConfig(dataset='imagenet', data=str(tmp_path), image_size=32,
                                                   decoder=decoder), torch.device('cuda'))
        loader = loaders.FolderLoader(splits[1], splits[2], 12, device='cuda', shuffle=False, augment=False,
                                      workers=0)
        batches[decoder] = next(loader.iterate(0))
        assert loader.on_device == (decoder == 'device')
    difference = grey_levels(batches['device'][0].cpu(), batches['workers'][0].cpu(), splits[2])
    assert torch.equal(batches['device'][1].cpu(), batches['workers'][1].cpu())
    assert difference.max() <= 8 and difference.mean() < 1
    train = loaders.FolderLoader(splits[0], splits[2], 4, device='cuda', shuffle=True, augment=True, workers=0)
    epoch = list(train.iterate(1))
    resumed = list(train.iterate(1, start_step=1))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch[1:], resumed, strict=True))
    assert epoch[0][0].device.type == 'cuda' and epoch[0][0].shape == (4, 3, 32, 32)


def test_decoding_never_writes_into_memory_that_queued_kernels_still_read(tmp_path):
    """pytorch/vision#9606: nvJPEG's outputs come from the current stream's freed blocks but are written at once.
    Here tensors of a decoded image's size are freed while reductions of them wait behind a long kernel; the
    decode must leave what those reductions read untouched."""
    write_jpegs(tmp_path, splits=('train',), per_class=8)
    files = [path.read_bytes() for path in sorted((tmp_path / 'train').rglob('*.JPEG'))]
    batch = (files, [0] * len(files), [True] * len(files), ['x'] * len(files))
    sizes = [image.numel() for image in streaming.decode(batch, 'RGB', 'cpu')[0]]
    for _ in range(20):
        held = [torch.full((size,), index % 7, dtype=torch.uint8, device='cuda') for index, size in enumerate(sizes)]
        torch.cuda.synchronize()
        torch.cuda._sleep(50_000_000)  # tens of milliseconds of a kernel that keeps the stream busy
        sums = [tensor.sum(dtype=torch.int64) for tensor in held]
        del held  # freed while their sums are still queued
        images = streaming.decode(batch, 'RGB', 'cuda')[0]
        torch.cuda.synchronize()
        assert [int(total) for total in sums] == [index % 7 * size for index, size in enumerate(sizes)]
        assert [image.numel() for image in images] == sizes
