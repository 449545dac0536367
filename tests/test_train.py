"""End-to-end runs of train.py and test.py on the synthetic dataset (CPU)."""
import json
import math
import re
import signal

import pytest
import torch
from conftest import load_script, run_script, wait_for_log
from PIL import Image

train = load_script('train')
test = load_script('test')

SMALL = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '2000',
         '--synthetic_test_size', '500', '--init_channels', '8', '--layers', '5', '--batch_size', '64',
         '--device', 'cpu', '--report_freq', '1000']
TINY = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '768', '--synthetic_test_size',
        '128', '--init_channels', '4', '--layers', '3', '--batch_size', '32', '--epochs', '3', '--device', 'cpu',
        '--auxiliary', '--cutout', '--cutout_length', '4']


@pytest.mark.slow
def test_train_learns_synthetic_data_and_test_reproduces_it(in_tmp):
    final = train.main(SMALL + ['--epochs', '3', '--auxiliary', '--cutout', '--cutout_length', '4',
                                '--exp_path', 'run'])
    assert final['test_top1'] >= 90.0
    for name in ('log.txt', 'args.json', 'metrics.jsonl', 'checkpoint.pt', 'weights.pt'):
        assert (in_tmp / 'run' / name).is_file(), name
    rows = [json.loads(line) for line in (in_tmp / 'run' / 'metrics.jsonl').read_text().splitlines()]
    assert [row['epoch'] for row in rows] == [0, 1, 2]
    assert rows[-1]['train_loss'] < rows[0]['train_loss']
    assert rows[1]['drop_path_prob'] == pytest.approx(0.2 / 3)
    # A bare state_dict: the architecture comes from the run folder's args.json.
    result = test.main(['--model_path', 'run/weights.pt', '--device', 'cpu'])
    assert result['top1'] == final['test_top1'] and result['images'] == 500
    # Our checkpoint needs nothing else either, and the results land in JSON.
    result = test.main(['--model_path', 'run/checkpoint.pt', '--device', 'cpu', '--output', 'out.json'])
    saved = json.loads((in_tmp / 'out.json').read_text())
    assert saved['top1'] == final['test_top1'] and saved['params_M'] > 0 and saved['flops'] > 0


@pytest.mark.slow
def test_sigterm_saves_and_resume_ends_with_the_uninterrupted_weights(in_tmp):
    whole = run_script('train', TINY + ['--exp_path', 'whole'], in_tmp)
    interrupted = run_script('train', TINY + ['--exp_path', 'cut'], in_tmp)
    wait_for_log(in_tmp / 'cut' / 'metrics.jsonl', r'"epoch": 0', interrupted)
    interrupted.send_signal(signal.SIGTERM)
    out, err = interrupted.communicate(timeout=300)
    assert interrupted.returncode == 143, err  # the shell's status for SIGTERM: the run did not finish
    saved = torch.load(in_tmp / 'cut' / 'checkpoint.pt', weights_only=True)
    assert (saved['epoch'], saved['samples']) < (3, 0), 'the run ended before the signal arrived'
    assert 'SIGTERM received' in out
    resumed = run_script('train', ['--resume', 'cut'], in_tmp)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    _, err = whole.communicate(timeout=300)
    assert whole.returncode == 0, err
    expected = torch.load(in_tmp / 'whole' / 'weights.pt', weights_only=True)
    actual = torch.load(in_tmp / 'cut' / 'weights.pt', weights_only=True)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    rows = (in_tmp / 'cut' / 'metrics.jsonl').read_text().splitlines()
    assert [json.loads(row)['epoch'] for row in rows] == [0, 1, 2]


def test_offline_cifar_gives_one_sentence_and_no_traceback(in_tmp):
    process = run_script('train', ['--dataset', 'cifar10', '--data', str(in_tmp / 'data'), '--epochs', '1'],
                         in_tmp, env={'https_proxy': 'http://127.0.0.1:9', 'http_proxy': 'http://127.0.0.1:9'})
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2
    assert 'Traceback' not in err and len(err.strip().splitlines()) == 1
    assert 'cifar-10-python.tar.gz' in err and str(in_tmp / 'data') in err
    assert not (in_tmp / 'data').exists(), 'a failed download leaves no empty folder behind'


def test_imagenet_defaults_apply_unless_given():
    parser = train.build_parser()
    args, _ = train.resolve_arguments(parser, ['--dataset', 'imagenet', '--layers', '12'])
    assert (args.init_channels, args.layers, args.batch_size, args.learning_rate) == (48, 12, 128, 0.1)
    assert (args.weight_decay, args.label_smooth, args.lr_scheduler, args.epochs) == (3e-5, 0.1, 'step', 250)
    assert args.drop_path_prob == 0.0  # quark0/darts cnn/train_imagenet.py: --drop_path_prob 0
    args, _ = train.resolve_arguments(parser, [])
    assert (args.init_channels, args.layers, args.epochs, args.arch, args.drop_path_prob) == (36, 20, 600, None, 0.2)


def test_pc_darts_imagenet_recipe_ramps_then_decays_linearly_as_its_train_imagenet_does():
    parser = train.build_parser()
    args, _ = train.resolve_arguments(parser, ['--dataset', 'imagenet', '--recipe', 'pc_darts'])
    assert (args.batch_size, args.learning_rate, args.weight_decay, args.label_smooth) == (1024, 0.5, 3e-5, 0.1)
    assert (args.init_channels, args.layers, args.epochs, args.drop_path_prob) == (48, 14, 250, 0.0)
    rates = learning_rates(args)
    # yuhuixu1993/PC-DARTS train_imagenet.py: 0.5 * (e + 1) / 5 for e < 5; adjust_lr: 0.5 * (245 - e) / 245 while
    # 250 - e > 5, then 0.5 * (250 - e) / (245 * 5).
    assert rates[:6] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.5 * 240 / 245])
    assert rates[244:] == pytest.approx([0.5 / 245, 0.5 / 245, 0.4 / 245, 0.3 / 245, 0.2 / 245, 0.1 / 245])
    for flags, message in ((['--recipe', 'pc_darts'], 'is its ImageNet recipe .*: give --dataset imagenet'),
                           (['--lr_ramp_epochs', '5', '--warmup_epochs', '5'], 'give one of them'),
                           (['--lr_scheduler', 'linear', '--epochs', '5'], 'give --epochs over 5')):
        with pytest.raises(train.utils.UserError, match=message):
            train.resolve_arguments(parser, flags)


def test_genotype_flags_and_their_errors(in_tmp):
    parser = train.build_parser()
    args, _ = train.resolve_arguments(parser, ['-genotype', "Genotype(normal=[('sep_conv_3x3', 0), "
                                               "('sep_conv_3x3', 1)], normal_concat=[2], reduce=[('max_pool_3x3', 0),"
                                               " ('max_pool_3x3', 1)], reduce_concat=[2])"])
    genotype, source = train.genotypes.genotype_from_flags(args.genotype, args.arch_path, args.arch)
    assert genotype.normal == [('sep_conv_3x3', 0), ('sep_conv_3x3', 1)] and source == 'given as --genotype'
    with pytest.raises(train.utils.UserError, match='does not exist'):
        train.main(['--arch_path', 'missing.json', '--dataset', 'synthetic'])
    with pytest.raises(train.utils.UserError, match='unknown genotype'):
        train.main(['--arch', 'NoSuchNet', '--dataset', 'synthetic'])
    with pytest.raises(train.utils.UserError, match='needs an even --init_channels, not 7'):
        train.main(['--init_channels', '7', '--dataset', 'synthetic', '--image_size', '128',
                    '--synthetic_train_size', '8', '--synthetic_test_size', '8', '--device', 'cpu'])


def test_test_py_names_mismatching_keys(in_tmp):
    net = train.model_lib.NetworkCIFAR(8, 10, 5, False, train.genotypes.DARTS_V2)
    torch.save(net.state_dict(), in_tmp / 'released.pt')
    with pytest.raises(test.utils.UserError, match='missing keys: .*unexpected keys'):
        test.main(['--model_path', 'released.pt', '--arch', 'PC_DARTS_cifar', '--init_channels', '8',
                   '--layers', '5', '--dataset', 'synthetic', '--synthetic_train_size', '64',
                   '--synthetic_test_size', '32', '--device', 'cpu'])


def learning_rates(args):
    """The learning rate of every epoch of train.py's schedule for `args`."""
    optimizer, scheduler = train.build_optimizer(args, [torch.zeros(1, requires_grad=True)])
    rates = []
    for _ in range(args.epochs):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


def test_learning_rate_warm_up_then_the_schedule():
    parser = train.build_parser()
    args, _ = train.resolve_arguments(parser, ['--epochs', '10', '--warmup_epochs', '3', '--learning_rate', '0.4'])
    rates = learning_rates(args)
    assert rates[:4] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert rates[4] < 0.4 and rates == sorted(rates[:4]) + sorted(rates[4:], reverse=True)


def test_sync_bn_needs_cuda(in_tmp):
    with pytest.raises(train.utils.UserError, match='--sync_bn needs CUDA devices'):
        train.main(['--dataset', 'synthetic', '--sync_bn', '--device', 'cpu'])


QUICK = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '256', '--synthetic_test_size',
         '64', '--init_channels', '4', '--layers', '3', '--batch_size', '32', '--device', 'cpu']


def test_a_run_says_what_it_will_do_shows_its_first_step_and_names_what_it_wrote(in_tmp, capsys):
    train.main(QUICK + ['--epochs', '1', '--arch', 'DARTS_V2', '--exp_path', 'run'])
    lines = capsys.readouterr().out.splitlines()

    def first(text):
        return next(index for index, line in enumerate(lines) if text in line)
    assert first('cell DARTS_V2: Genotype(normal=') < first('1 epoch(s) of 8 steps') < first(
        'train epoch 0/1 step 1/8 (12%) loss') < first('epoch 0 lr')
    assert ' M parameters (auxiliary head excluded)' in lines[first('M parameters')]
    assert lines[-1].endswith('wrote run: weights.pt (the trained weights), checkpoint.pt, metrics.jsonl, args.json, '
                              'log.txt; test it with: python test.py --model_path run/weights.pt')


def test_args_json_records_the_classes_of_the_data(in_tmp):
    for label, colour in enumerate(((220, 30, 30), (30, 30, 220))):
        folder = in_tmp / 'images' / f'class{label}'
        folder.mkdir(parents=True)
        for i in range(12):
            Image.new('RGB', (20, 20), colour).save(folder / f'{i}.png')
    train.main(['--dataset', 'folder', '--data', 'images', '--image_size', '16', '--init_channels', '4', '--layers',
                '3', '--batch_size', '8', '--epochs', '1', '--device', 'cpu', '--exp_path', 'run'])
    assert json.loads((in_tmp / 'run' / 'args.json').read_text())['num_classes'] == 2


def test_loose_weights_tell_their_size_and_a_wrong_cell_names_the_flags(in_tmp, capsys):
    net = train.model_lib.NetworkCIFAR(6, 4, 4, True, train.genotypes.PC_DARTS_cifar)
    torch.save({f'module.{key}': value for key, value in net.state_dict().items()}, in_tmp / 'loose.pt')
    data = ['--dataset', 'synthetic', '--num_classes', '4', '--synthetic_train_size', '64', '--synthetic_test_size',
            '32', '--image_size', '16', '--device', 'cpu']
    result = test.main(['--model_path', 'loose.pt', '--arch', 'PC_DARTS_cifar'] + data)
    assert result['params_M'] == train.utils.count_parameters_in_millions(net) and result['images'] == 32
    told = 'C 6, 4 cells, auxiliary head, with --init_channels, --layers, --in_channels read from the weights\' shapes'
    assert told in capsys.readouterr().out
    with pytest.raises(test.utils.UserError, match=re.escape(
            f'{told}; the cell is DARTS, the default, unless --arch, --arch_path or --genotype gives another; give '
            'the flags the weights were trained with); missing keys')):
        test.main(['--model_path', 'loose.pt'] + data)


def cosine(rate, epoch, epochs):
    return rate * (1 + math.cos(math.pi * epoch / epochs)) / 2


@pytest.mark.slow
def test_a_finished_run_continues_for_more_epochs_on_the_longer_schedule(in_tmp, capsys):
    train.main(QUICK + ['--epochs', '2', '--exp_path', 'run'])
    with pytest.raises(train.utils.UserError, match="--epochs 1 differs from the checkpoint's 2"):
        train.main(['--resume', 'run', '--epochs', '1'])
    final = train.main(['--resume', 'run', '--epochs', '4'])
    assert 'the run grows from 2 to 4 epochs' in capsys.readouterr().out
    rows = [json.loads(line) for line in (in_tmp / 'run' / 'metrics.jsonl').read_text().splitlines()]
    assert [row['epoch'] for row in rows] == [0, 1, 2, 3] and final['epoch'] == 3
    assert [row['lr'] for row in rows] == pytest.approx([cosine(0.025, 0, 2), cosine(0.025, 1, 2),
                                                         cosine(0.025, 2, 4), cosine(0.025, 3, 4)])
    assert rows[3]['drop_path_prob'] == pytest.approx(0.2 * 3 / 4)
    assert json.loads((in_tmp / 'run' / 'args.json').read_text())['epochs'] == 4
    assert train.checkpoints.load_checkpoint('run/checkpoint.pt')['epoch'] == 4


@pytest.mark.slow
def test_compiled_training_compiles_one_graph_for_training_and_one_for_evaluation(in_tmp, monkeypatch):
    """Over epochs of changing drop-path probability, with a partial last batch in training and in the test;
    then test.py --compile compiles one graph, for the same partial last batch."""
    from torch._dynamo.testing import CompileCounter
    counter, compile_with = CompileCounter(), torch.compile
    monkeypatch.setattr(torch, 'compile', lambda model, **options: compile_with(model, backend=counter))
    torch._dynamo.reset()
    rows = train.main(['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '200',
                       '--synthetic_test_size', '40', '--init_channels', '4', '--layers', '3', '--batch_size', '32',
                       '--epochs', '3', '--device', 'cpu', '--auxiliary', '--drop_path_prob', '0.2', '--compile',
                       '--exp_path', 'eval'])
    assert counter.frame_count == 2
    assert rows['drop_path_prob'] == pytest.approx(0.2 * 2 / 3)
    counter.frame_count = 0
    torch._dynamo.reset()
    tested = [test.main(['--model_path', 'eval/weights.pt', '--batch_size', '32', *flag])
              for flag in (['--compile'], [])]
    assert counter.frame_count == 1 and tested[0]['images'] == 40
    assert tested[0]['top1'] == tested[1]['top1'] and tested[0]['loss'] == pytest.approx(tested[1]['loss'], abs=1e-6)
