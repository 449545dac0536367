"""How long the README's runs would take on this device, projected from the measured rates of their steps and
of the loader: gpu_check.py's projections phase, on a GPU."""
import functools
import math
import os

import bench
import train_search
import utils

# The searches whose run times the README states: (name, train_search.py flags, image size, classes, images of
# an epoch: the weights' share and the validation pass's). The methods are the README's NAS-Bench-201 sweep;
# ImageNet's subsets are 10% and 2.5% of its 1,281,167 training images.
CIFAR_HALVES = (25_000, 25_000)
# DARTS_V2 as DARTS's train_imagenet.py trains it (C = 48, 14 cells, 224 pixels), for 250 epochs of ImageNet's
# 1,281,167 training images, each tested on its 50,000 validation images.
IMAGENET_NETWORK = dict(train_channels=48, train_layers=14, image_size=224)
IMAGENET_RETRAINING = (250, 1_281_167, 50_000)
NB201_SWEEP = ('darts', 'pc_darts', 'gdas', 'drnas', 'sdarts_rs', 'beta_darts')
PROJECTED_SEARCHES = (
    *((f'nas_bench_201 {method}', ['--method', method, '--search_space', 'nas_bench_201'], 32, 10, CIFAR_HALVES)
      for method in NB201_SWEEP),
    ('darts --unrolled', ['--method', 'darts', '--unrolled'], 32, 10, CIFAR_HALVES),
    ('pc_darts_imagenet b128', ['--method', 'pc_darts_imagenet', '--batch_size', '128'], 224, 1000,
     (128_117, 32_029)),
)


def search_hours(flags, image_size, classes, images, speed, sync, steps, warmup):
    """(hours of the search of train_search.py's `flags`, [its stages' step images per second], its resolved
    arguments): each stage's warm-up epochs at the weight step's rate, its other epochs at the whole step's, each
    epoch's validation pass over images[1]; the weights see images[0] an epoch."""
    case = bench.search_case_of(flags, image_size, classes, speed)
    args, seconds, rates = case.search_args, 0.0, []
    for stage_index in range(len(train_search.search_stages(args))):
        if stage_index:
            case = bench.search_case_of(flags, image_size, classes, speed, stage_index)
        per_batch = {name: utils.timed(step, sync, steps, warmup)
                     for name, step in (('step', case.step), ('weights', case.weight_step),
                                        ('validate', case.validate))}
        batches = [math.ceil(share / args.batch_size) for share in images]
        frozen = min(args.warmup_epochs, args.epochs)
        seconds += batches[0] * (frozen * per_batch['weights'] + (args.epochs - frozen) * per_batch['step'])
        seconds += args.epochs * batches[1] * per_batch['validate']
        rates.append(args.batch_size / per_batch['step'])
    return seconds / 3600, rates, args


def retraining_rates(batch, sizes, classes, speed, sync, steps, warmup):
    """Images per second of DARTS_V2's training step ('train') and of its inference ('infer') at `sizes`."""
    return {case: batch / utils.timed(bench.train_case(batch, sizes, speed, inference, classes), sync, steps, warmup)
            for case, inference in (('train', False), ('infer', True))}


def project(speed, sync, dry, folder):
    """Estimated hours of the README's runs on this device, from steps measured at `speed`: each search of the
    NAS-Bench-201 sweep and DARTS's second order; DARTS's best of four (4 searches, 4 retrainings of 100 epochs on
    45,000 images, one of 600 on 50,000, each epoch tested); PC-DARTS's ImageNet search and ImageNet's retraining
    at batch 128, each bound by its step or by the loader, whichever is slower, on one GPU and on eight (one GPU's
    time over eight: the gradients' averaging is not counted). A case that fails is reported in its row (and
    in the rows built on it); the others are still measured."""
    steps, warmup = (1, 0) if dry else (5, 3)
    toy = ['--init_channels', '8', '--batch_size', '8'] if dry else []
    rows = {}
    for name, flags, image_size, classes, images in PROJECTED_SEARCHES:
        measure(rows, name, functools.partial(search_row, flags + toy, 16 if dry else image_size, classes, images,
                                              speed, sync, steps, warmup))
    measure(rows, 'retraining DARTS_V2 b96', lambda: retraining_rates(
        8 if dry else 96, bench.TINY if dry else bench.PAPER, 10, speed, sync, steps, warmup))
    measure(rows, 'NAS-Bench-201 sweep, 4 seeds', lambda: {
        'hours': 4 * sum(measured(rows, f'nas_bench_201 {method}')['hours'] for method in NB201_SWEEP)})
    measure(rows, 'DARTS best of four', lambda: best_of_four(rows))
    measure(rows, 'ImageNet loader b128', lambda: loader_rates(8 if dry else 128, dry, speed, sync))
    measure(rows, 'PC-DARTS ImageNet search', lambda: imagenet_search(rows))
    measure(rows, 'ImageNet retraining, 250 epochs', lambda: imagenet_retraining(rows, retraining_rates(
        8 if dry else 128, bench.TINY if dry else IMAGENET_NETWORK, 1000, speed, sync, steps, warmup)))
    shown = [row for case, row in rows.items() if case not in ('retraining DARTS_V2 b96', 'ImageNet loader b128')
             or 'error' in row]
    if folder:
        with open(os.path.join(folder, 'projections.md'), 'w', encoding='utf-8') as f:
            f.write(markdown(shown))
    return {'ok': all('error' not in row for row in rows.values()), 'cases': shown}


def measure(rows, case, compute):
    """rows[case]: what compute() measured, or why it failed."""
    try:
        rows[case] = {'case': case, **compute()}
    except Exception as error:  # one failing case leaves the others' figures
        rows[case] = {'case': case, 'error': f'{type(error).__name__}: {error}'[:300]}


def measured(rows, case):
    if 'error' in rows[case]:
        raise RuntimeError(f'{case} failed')
    return rows[case]


def best_of_four(rows):
    rate, search = measured(rows, 'retraining DARTS_V2 b96'), measured(rows, 'darts --unrolled')
    retraining = {epochs: epochs * (trained / rate['train'] + tested / rate['infer']) / 3600
                  for epochs, trained, tested in ((100, 45_000, 5_000), (600, 50_000, 10_000))}
    return {'retraining_images_per_s': rate['train'],
            'hours': 4 * search['hours'] + 4 * retraining[100] + retraining[600]}


def imagenet_search(rows):
    """The loaders read each epoch's weight batches, as many architecture batches after the warm-up, and the
    validation pass; one loader's rate is taken for all three, though they read in parallel."""
    search, loader = measured(rows, 'pc_darts_imagenet b128'), measured(rows, 'ImageNet loader b128')
    weights, validation = PROJECTED_SEARCHES[-1][4]
    loaded = search['epochs'] * (weights + validation) + (search['epochs'] - search['warmup_epochs']) * weights
    one_gpu = max(search['hours'], loaded / loader['device'] / 3600)
    return {'loader_images_per_s': loader_only(loader), 'hours_one_gpu': one_gpu, 'hours_eight_gpus': one_gpu / 8}


def imagenet_retraining(rows, rates):
    """DARTS's recipe, or PC-DARTS's over 8 GPUs (batch 128 a GPU either way) at `rates`, each epoch tested on the
    50,000 validation images; bound by the step or by the loader of its training pipeline."""
    loader = measured(rows, 'ImageNet loader b128')
    epochs, trained, tested = IMAGENET_RETRAINING
    stepping = epochs * (trained / rates['train'] + tested / rates['infer']) / 3600
    one_gpu = max(stepping, epochs * trained / loader['device'] / 3600)
    return {'retraining_images_per_s': rates['train'], 'loader_images_per_s': loader_only(loader),
            'hours_one_gpu': one_gpu, 'hours_eight_gpus': one_gpu / 8}


def search_row(flags, image_size, classes, images, speed, sync, steps, warmup):
    hours, rates, args = search_hours(flags, image_size, classes, images, speed, sync, steps, warmup)
    return {'batch': args.batch_size, 'epochs': args.epochs, 'warmup_epochs': args.warmup_epochs,
            'step_images_per_s': rates, 'hours': hours}


def loader_rates(batch_size, dry, speed, sync):
    """Images per second of ImageNet's training pipeline from JPEG files, decoded on the device and in workers."""
    rates = {}
    for decoder in ('device', 'workers'):
        timed = bench.jpeg_loader_case(batch_size, decoder, dry, speed)
        rates[decoder] = timed.batch_size * timed.batches / utils.timed(timed.step, sync, 1 if dry else 3, 1)
    return rates


def loader_only(row):
    return {decoder: row[decoder] for decoder in ('device', 'workers')}


def markdown(rows):
    """The projections as a Markdown table, for BENCHMARKS.md and the README."""
    lines = ['| run | measured images/s | projected hours |', '| --- | --- | --- |']
    for row in rows:
        shown = [f'{rate:,.0f}' for rate in row.get('step_images_per_s', [])]
        if 'retraining_images_per_s' in row:
            shown.append(f"retraining {row['retraining_images_per_s']:,.0f}")
        shown += [f'loader {rate:,.0f} ({decoder})' for decoder, rate in row.get('loader_images_per_s', {}).items()]
        hours = (f"failed: {row['error']}" if 'error' in row else
                 f"{row['hours_one_gpu']:.2f} on one GPU, {row['hours_eight_gpus']:.2f} on eight"
                 if 'hours_one_gpu' in row else f"{row['hours']:.2f}")
        lines.append(f"| {row['case']} | {', '.join(shown) or '-'} | {hours} |")
    return '\n'.join(lines) + '\n'
