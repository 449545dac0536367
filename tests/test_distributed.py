"""torchrun with two CPU processes (gloo), and the ImageNet-folder path of train.py and test.py."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, finish, load_script, metrics, run_script, wait_for_log
from PIL import Image

test_script = load_script('test')

SYNTHETIC = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '1000',
             '--synthetic_test_size', '301', '--init_channels', '4', '--layers', '3', '--device', 'cpu',
             '--report_freq', '1000']


def torchrun(script, args, cwd, processes=2):
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={processes}',
               os.path.join(ROOT, f'{script}.py'), *args]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_processes_train_like_one_with_the_same_total_batch(in_tmp):
    finish(torchrun('train', SYNTHETIC + ['--batch_size', '32', '--epochs', '3', '--exp_path', 'two', '--tensorboard'],
                    in_tmp))
    finish(run_script('train', SYNTHETIC + ['--batch_size', '64', '--epochs', '3', '--exp_path', 'one'], in_tmp))
    assert sorted(os.listdir(in_tmp)) == ['one', 'two']  # no folder from the second rank
    assert sorted(os.listdir(in_tmp / 'two')) == ['args.json', 'checkpoint.pt', 'log.txt', 'metrics.jsonl',
                                                  'tensorboard', 'weights.pt']
    assert len(os.listdir(in_tmp / 'two' / 'tensorboard')) == 1  # rank 0 alone writes events
    log = (in_tmp / 'two' / 'log.txt').read_text()
    assert log.count('epoch 2 lr') == 1 and '2 process(es) of batch 32' in log
    two, one = metrics(in_tmp / 'two'), metrics(in_tmp / 'one')
    assert [row['epoch'] for row in two] == [0, 1, 2]
    print(f"held-out accuracy: 2 processes {two[-1]['test_top1']:.2f}, 1 process {one[-1]['test_top1']:.2f}")
    assert abs(two[-1]['test_top1'] - one[-1]['test_top1']) <= 10.0 and two[-1]['test_top1'] > 50.0
    # test.py under torchrun splits the test set between ranks and agrees with one process exactly.
    finish(torchrun('test', ['--model_path', 'two/checkpoint.pt', '--output', 'two.json'], in_tmp))
    single = test_script.main(['--model_path', 'two/checkpoint.pt', '--output', 'one.json'])
    both = json.loads((in_tmp / 'two.json').read_text())
    assert both['images'] == single['images'] == 301
    assert both['top1'] == pytest.approx(single['top1']) and both['top1'] == pytest.approx(two[-1]['test_top1'])


def stop_after_an_epoch(script, args, folder):
    """Run `script` in two processes and SIGTERM it once an epoch is done; returns the checkpoint it saved."""
    stop_after_epoch(torchrun(script, args, folder.parent), folder, 0)
    return torch.load(folder / 'checkpoint.pt', weights_only=True)


@pytest.mark.slow
def test_a_checkpoint_of_two_processes_resumes_in_one(in_tmp):
    saved = stop_after_an_epoch('train', SYNTHETIC + ['--batch_size', '32', '--epochs', '4', '--exp_path', 'run'],
                                in_tmp / 'run')
    assert (saved['epoch'], saved['samples']) < (4, 0) and len(saved['rng']) == 2
    finish(run_script('train', ['--resume', 'run'], in_tmp))
    assert [row['epoch'] for row in metrics(in_tmp / 'run')] == [0, 1, 2, 3]
    assert 'resumed from epoch' in (in_tmp / 'run' / 'log.txt').read_text()


@pytest.mark.slow
def test_two_processes_search_with_averaged_gradients(in_tmp):
    args = SYNTHETIC + ['--synthetic_train_size', '256', '--num_classes', '4', '--batch_size', '16', '--epochs', '2',
                        '--partial_channels', '2', '--exp_path', 'search']
    finish(torchrun('train_search', args, in_tmp))
    assert sorted(os.listdir(in_tmp)) == ['search']
    assert sorted(os.listdir(in_tmp / 'search')) == ['args.json', 'checkpoint.pt', 'genotype.json', 'log.txt',
                                                     'metrics.jsonl']
    assert [row['epoch'] for row in metrics(in_tmp / 'search')] == [0, 1]
    assert metrics(in_tmp / 'search')[-1]['valid_top1'] > 25.0


def stop_after_epoch(process, folder, epoch):
    wait_for_log(folder / 'metrics.jsonl', f'"epoch": {epoch}', process)
    process.send_signal(signal.SIGTERM)  # torchrun passes it on to every worker
    process.communicate(timeout=300)


@pytest.mark.slow
def test_a_gdas_search_keeps_one_architecture_on_every_rank_across_resumes(in_tmp):
    """GDAS computes only the ops it samples: ranks that sampled differently would average gradients of
    different layouts. Every rank draws from one generator, saved in the checkpoint, so a search moved
    from two processes to one and back to two samples alike everywhere; the search checks at the end of
    every epoch that all ranks hold the same architecture weights, and stops if not."""
    args = SYNTHETIC + ['--synthetic_train_size', '256', '--num_classes', '4', '--batch_size', '16', '--epochs', '4',
                        '--gdas', '--exp_path', 'search']
    stop_after_epoch(torchrun('train_search', args, in_tmp), in_tmp / 'search', 0)
    saved = torch.load(in_tmp / 'search' / 'checkpoint.pt', weights_only=True)
    assert (saved['epoch'], saved['samples']) < (4, 0) and len(saved['rng']) == 2 and 'method_rng' in saved
    stop_after_epoch(run_script('train_search', ['--resume', 'search'], in_tmp), in_tmp / 'search', 1)
    finish(torchrun('train_search', ['--resume', 'search'], in_tmp))
    assert [row['epoch'] for row in metrics(in_tmp / 'search')] == [0, 1, 2, 3]
    log = (in_tmp / 'search' / 'log.txt').read_text()
    assert '(1 process(es))' in log and log.count('(2 process(es))') == 1
    assert (in_tmp / 'search' / 'genotype.json').is_file()


def write_imagenet_folder(root):
    """Two classes of 64x64 JPEGs, told apart by colour."""
    rng = np.random.default_rng(0)
    for split, count in (('train', 8), ('val', 4)):
        for label, name in enumerate(('n01440764', 'n01443537')):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 60, (64, 64, 3), dtype=np.uint8)
                pixels[:, :, label] += 150
                Image.fromarray(pixels).save(folder / f'{i}.JPEG')


@pytest.mark.slow
def test_imagenet_folders_train_and_test(in_tmp):
    write_imagenet_folder(in_tmp / 'imagenet')
    train = load_script('train')
    final = train.main(['--dataset', 'imagenet', '--data', 'imagenet', '--image_size', '32', '--init_channels', '8',
                        '--layers', '3', '--batch_size', '4', '--epochs', '2', '--workers', '0', '--auxiliary',
                        '--device', 'cpu', '--exp_path', 'run'])
    saved = json.loads((in_tmp / 'run' / 'args.json').read_text())
    assert (saved['lr_scheduler'], saved['label_smooth'], saved['weight_decay']) == ('step', 0.1, 3e-5)
    result = test_script.main(['--model_path', 'run/checkpoint.pt', '--workers', '0'])
    assert result['images'] == 8 and result['top1'] == pytest.approx(final['test_top1'])
    assert result['dataset'] == 'imagenet'
