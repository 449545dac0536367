"""The search split: PC-DARTS's class-balanced, seeded subsets of ImageNet, kept in the run folder, and its
ImageNet search preset."""
import json
import math

import numpy as np
import pytest
import torch
from conftest import load_script
from PIL import Image

import data
import loop
import search_split
import streaming
from utils import UserError

train_search = load_script('train_search')


def write_imagenet(root, counts):
    """train/ with counts[c] noisy JPEGs in class c, and val/ with two per class."""
    rng = np.random.default_rng(0)
    for split, per_class in (('train', counts), ('val', [2] * len(counts))):
        for label, count in enumerate(per_class):
            (root / split / f'n{label:08d}').mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / f'n{label:08d}' / f'{index}.JPEG')


def test_subsets_are_class_balanced_disjoint_and_drawn_from_the_seed():
    labels = torch.tensor([0] * 40 + [1] * 80 + [2] * 120)
    train, arch = search_split.sample(labels, 0.1, 0.025, seed=2)
    assert np.bincount(labels[train]).tolist() == [4, 8, 12] and np.bincount(labels[arch]).tolist() == [1, 2, 3]
    assert not set(train.tolist()) & set(arch.tolist())
    again = search_split.sample(labels, 0.1, 0.025, seed=2)
    other = search_split.sample(labels, 0.1, 0.025, seed=3)
    assert torch.equal(again[0], train) and torch.equal(again[1], arch)
    assert not torch.equal(other[0], train)
    first_class = set(train[labels[train] == 0].tolist())
    assert first_class != set(range(4)), 'drawn, not the first images of the class'
    with pytest.raises(UserError, match='must be shares in \\(0, 1\\) that add up to at most 1'):
        search_split.sample(labels, 0.8, 0.3, seed=2)
    with pytest.raises(UserError, match='leave 0 and 0; both need at least one image'):
        search_split.sample(labels[:3], 0.1, 0.1, seed=2)


@pytest.mark.parametrize('argv, message', [
    (['--train_subset', '0.1'], '--train_subset and --arch_subset come together'),
    (['--subset_file', 'x.json'], '--subset_file repeats the subsets of a run with --train_subset'),
    (['--train_subset', '0.1', '--arch_subset', '0.1', '--split_file', 's.txt'], 'give one of them'),
])
def test_a_half_given_subset_is_refused_in_one_sentence(argv, message):
    with pytest.raises(UserError, match=message):
        train_search.resolve_arguments(train_search.build_parser(), argv)


def test_the_subsets_are_written_to_the_run_folder_read_back_on_resume_and_repeatable(in_tmp, monkeypatch):
    write_imagenet(in_tmp / 'imagenet', [8, 12])
    flags = ['--dataset', 'imagenet', '--data', str(in_tmp / 'imagenet'), '--image_size', '16', '--workers', '0',
             '--train_subset', '0.5', '--arch_subset', '0.25', '--init_channels', '4', '--layers', '2',
             '--batch_size', '5', '--device', 'cpu', '--report_freq', '1000']
    train_search.main(flags + ['--epochs', '1', '--exp_path', 'search'])
    written = json.loads((in_tmp / 'search' / 'subsets.json').read_text())
    assert sorted(written) == ['arch', 'train'] and (len(written['train']), len(written['arch'])) == (10, 5)
    assert all(name.startswith(('n00000000/', 'n00000001/')) for name in written['train'] + written['arch'])
    # The folder changes; the resumed run keeps the images it was searching on, and draws nothing.
    Image.new('RGB', (20, 24)).save(in_tmp / 'imagenet' / 'train' / 'n00000000' / 'new.JPEG')
    monkeypatch.setattr(search_split, 'sample', lambda *args: pytest.fail('a resumed run drew new subsets'))
    train_search.main(['--resume', 'search', '--epochs', '2'])
    assert json.loads((in_tmp / 'search' / 'subsets.json').read_text()) == written
    train_search.main(flags + ['--epochs', '1', '--exp_path', 'again', '--subset_file', 'search/subsets.json'])
    assert json.loads((in_tmp / 'again' / 'subsets.json').read_text()) == written
    gone = written['arch'][0]
    (in_tmp / 'imagenet' / 'train' / gone).unlink()
    with pytest.raises(UserError, match=f"names 1 image\\(s\\) the training set does not hold, such as {gone}"):
        train_search.main(flags + ['--epochs', '1', '--exp_path', 'third', '--subset_file', 'search/subsets.json'])


def test_the_lr_ramp_replaces_the_first_cosine_epochs_as_pc_darts_imagenet_search_does():
    sgd = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    schedule = loop.search_schedule(sgd, 50, 0.0, ramp_epochs=5)
    rates = []
    for _ in range(50):
        rates.append(sgd.param_groups[0]['lr'])
        sgd.step()
        schedule.step()
    # train_search_imagenet.py: lr * (epoch + 1) / 5 for epochs 0-4, CosineAnnealingLR(50, eta_min=0)'s rate after.
    theirs = [0.5 * (e + 1) / 5 if e < 5 else 0.5 * (1 + math.cos(math.pi * e / 50)) / 2 for e in range(50)]
    assert rates == pytest.approx(theirs, rel=1e-12)


def test_the_pc_darts_imagenet_preset_builds_its_supernet_and_searches_without_colour_jitter():
    args, _, _ = train_search.resolve_arguments(train_search.build_parser(), ['--method', 'pc_darts_imagenet'])
    settings = {name: getattr(args, name) for name in (
        'dataset', 'batch_size', 'learning_rate', 'learning_rate_min', 'arch_learning_rate', 'epochs',
        'warmup_epochs', 'lr_ramp_epochs', 'train_subset', 'arch_subset', 'partial_channels', 'weight_decay')}
    assert settings == dict(dataset='imagenet', batch_size=1024, learning_rate=0.5, learning_rate_min=0.0,
                            arch_learning_rate=6e-3, epochs=50, warmup_epochs=35, lr_ramp_epochs=5,
                            train_subset=0.1, arch_subset=0.025, partial_channels=2, weight_decay=3e-4)
    info = data.DatasetInfo('imagenet', 1000, 3, 224, data.IMAGENET_MEAN, data.IMAGENET_STD)
    arch = train_search.build_architecture(args, info, args.layers, args.partial_channels, args.max_skip)
    assert sum(p.numel() for p in arch.net.network_weights()) == 956512  # model_search_imagenet.py's
    for jitter, steps in ((False, []), (True, ['ColorJitter'])):
        pipeline = streaming.Pipeline('random_resized_crop', 224, jitter)
        assert [type(t).__name__ for t in pipeline.pil_transform().transforms] == [
            'partial', 'RandomResizedCrop', 'RandomHorizontalFlip', *steps, 'PILToTensor']


@pytest.mark.slow
def test_a_cell_searched_on_imagenet_with_the_strided_stem_is_retrained_and_tested(in_tmp):
    """PC-DARTS's ImageNet search at toy size (its preset, its stem from --image_size 128 up), then the found
    cell retrained and tested at ImageNet's layout by the existing scripts."""
    write_imagenet(in_tmp / 'imagenet', [8, 8])
    data_flags = ['--dataset', 'imagenet', '--data', 'imagenet', '--image_size', '128', '--workers', '0',
                  '--device', 'cpu', '--report_freq', '1000']
    train_search.main(['--method', 'pc_darts_imagenet', '--train_subset', '0.5', '--arch_subset', '0.25',
                       '--init_channels', '4', '--layers', '2', '--batch_size', '4', '--epochs', '1',
                       '--exp_path', 'search'] + data_flags)
    supernet = torch.load(in_tmp / 'search' / 'checkpoint.pt', weights_only=True, map_location='cpu')['model']
    assert {'stem0.0.weight', 'stem1.1.weight'} <= set(supernet)  # the strided stems, not CIFAR's stem
    assert (in_tmp / 'search' / 'subsets.json').is_file()
    log = (in_tmp / 'search' / 'log.txt').read_text()
    assert "(PC-DARTS's ImageNet stem: 128 pixels strided to 16 before the cells)" in log
    final = load_script('train').main(['--arch_path', 'search/genotype.json', '--init_channels', '4', '--layers', '3',
                                       '--batch_size', '4', '--epochs', '1', '--exp_path', 'eval'] + data_flags)
    result = load_script('test').main(['--model_path', 'eval/checkpoint.pt', '--workers', '0'])
    assert result['images'] == 4 and result['top1'] == pytest.approx(final['test_top1'])
