"""Benchmark: images per second and peak memory of every search method's step, DARTS_V2's training and inference.

It also times the data loader on its own, prints a table and writes JSON for BENCHMARKS.md.

    python bench.py                       # everything, at the papers' sizes
    python bench.py --baseline            # the same steps with every speed option off
    python bench.py --tiny --steps 1      # a smoke run (the tests use it)
    python bench.py --latency net.onnx --batch_sizes 64   # an exported network at batch 1 and 64

It reuses the scripts' own step functions, so it measures exactly what a run executes.
"""
import atexit
import platform
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import numpy as np
import torch
from PIL import Image
from torch import nn

import architect as architect_lib
import cost
import curvature
import data
import export
import genotypes
import loaders
import methods as methods_lib
import model as model_lib
import parallel
import precision
import streaming
import utils
from train import train_step
from train_search import build_architecture, build_optimizers, resolve_arguments, search_stages, search_step
from train_search import build_parser as build_search_parser

# Search benchmarks: (name, method preset, extra flags). Batch sizes and options are the presets'.
# Every --method preset is timed as it runs (a search in stages: its first stage), and these also second order.
SECOND_ORDER = ('darts', 'pc_darts', 'att_darts')
CASES = ('search', 'train', 'infer', 'loader', 'curvature')
DEFAULT_CASES = CASES[:4]  # curvature times a whole measurement per step: asked for by name
PAPER = dict(search_channels=16, search_layers=8, train_channels=36, train_layers=20, image_size=32)
TINY = dict(search_channels=16, search_layers=3, train_channels=8, train_layers=5, image_size=16)


# ---------------------------------------------------------------------------------------------
# The steps it times. Each builder returns the step, ready to run again and again; they reuse the scripts'
# own step functions, so a timing is of exactly what a run executes.

def random_batch(batch_size, channels, size, classes, speed):
    images = torch.randn(batch_size, channels, size, size, device=speed.device)
    return images.contiguous(memory_format=speed.memory_format), torch.randint(0, classes, (batch_size,),
                                                                               device=speed.device)


@dataclass(frozen=True)
class Speed:
    """The speed settings of a benchmark run: autocast dtype (None: float32), memory format, compilation."""
    dtype: Optional[torch.dtype]
    channels_last: bool
    compile: bool
    device: torch.device

    def autocast(self):
        return precision.autocast_factory(self.dtype, self.device)()

    @property
    def memory_format(self):
        return precision.memory_format(self.channels_last)


class Timed(NamedTuple):
    """What a case times: `step` runs `batches` batches of `batch_size` per call; `runtime` names what ran it."""
    batch_size: int
    step: Callable
    runtime: Optional[str] = None
    batches: int = 1


class SearchCase(NamedTuple):
    batch_size: int
    step: Callable  # () -> the search step's (loss, logits, architecture loss)
    arch: object  # the architecture.Architecture searched (its supernet is arch.net)
    validate: Callable  # () -> logits of the validation pass on one batch
    weight_step: Callable  # () -> the step of a warm-up epoch: the weights alone
    search_args: object  # train_search.py's arguments of the search, resolved


def search_case(method, extra, sizes, tiny, speed):
    # A preset of its own size (DrNAS, P-DARTS: their first stage) keeps it, but for its depth in a smoke run.
    preset, layers = methods_lib.presets()[method], str(sizes['search_layers'])
    stages = len(preset.get('stage_layers', ()))
    depth = ['--stage_layers', ','.join([layers] * stages)] if stages else ['--layers', layers]
    sized = ([] if 'init_channels' in preset else ['--init_channels', str(sizes['search_channels'])]) + (
        depth if tiny or not (stages or 'layers' in preset) else []) + ['--batch_size', '8'] * tiny
    image_size, classes = sizes['image_size'], 10
    if preset.get('dataset') == 'imagenet' and not tiny:
        # PC-DARTS's ImageNet search: 224 pixels, 1000 classes, its batch of 1024 on 8 GPUs: one GPU's share.
        image_size, classes = data.DEFAULT_IMAGE_SIZE['imagenet'], 1000
        sized += ['--batch_size', str(preset['batch_size'] // 8)]
    return search_case_of(['--method', method, *sized, *extra], image_size, classes, speed)


def search_case_of(flags, image_size, classes, speed, stage_index=0):
    """The step of a search with train_search.py's `flags`, on random images of `image_size` pixels and
    `classes` classes, in stage `stage_index` of the search."""
    # The precision goes through train_search.py's own checks, so that a setting it refuses is refused here.
    amp = {None: 'off', torch.bfloat16: 'bf16', torch.float16: 'fp16'}[speed.dtype]
    search_args, _, _ = resolve_arguments(build_search_parser(), [*flags, '--dataset', 'synthetic', '--amp', amp])
    info = data.DatasetInfo('synthetic', classes, 3, image_size, (0.5,) * 3, (0.25,) * 3)
    stage = search_stages(search_args)[stage_index]
    arch = build_architecture(search_args, info, stage.layers, stage.partial_channels, search_args.max_skip)
    model = arch.net.to(speed.device, memory_format=speed.memory_format)
    model.skip_dropout = stage.skip_dropout
    w_optimizer, _, architect = build_optimizers(search_args, arch, parallel.Distributed(), speed.autocast, 1)
    objective = architect.objective
    objective.set_epoch(search_args.epochs // 2, search_args.epochs)
    batch, alpha_batch = (random_batch(search_args.batch_size, 3, image_size, classes, speed) for _ in range(2))
    model.train()

    def step(update_architecture=True):
        return search_step(architect, batch, alpha_batch, w_optimizer, 0.025, search_args.grad_clip,
                           search_args.unrolled, update_architecture=update_architecture)

    def validate():
        model.eval()
        with torch.no_grad(), speed.autocast():
            logits = model(alpha_batch[0], objective.arch_weights('eval'))
        model.train()
        return logits

    def weight_step():
        return step(update_architecture=False)
    return SearchCase(search_args.batch_size, step, arch, validate, weight_step, search_args)


def curvature_case(sizes, tiny, speed):
    """(batch size, one measurement of the dominant eigenvalue of the Hessian, train_search.py
    --hessian_eigenvalue, on one batch of the DARTS supernet)."""
    case = search_case('darts', [], sizes, tiny, speed)
    batch = random_batch(case.batch_size, 3, sizes['image_size'], 10, speed)
    objective = architect_lib.SearchObjective(case.arch, speed.autocast)
    return case.batch_size, lambda: curvature.hessian_eigenvalue(objective, [batch])


def train_case(batch_size, sizes, speed, inference, classes=10):
    """A training step (or an inference) of DARTS_V2 at `sizes`, ImageNet's network from 128 pixels up."""
    config = dict(kind=model_lib.network_kind('', sizes['image_size']), C=sizes['train_channels'],
                  num_classes=classes, layers=sizes['train_layers'], auxiliary=True, in_channels=3,
                  image_size=sizes['image_size'])
    net = model_lib.build_network(config, genotypes.DARTS_V2).to(speed.device, memory_format=speed.memory_format)
    net.drop_path_prob = 0.1
    forward = torch.compile(net) if speed.compile else net
    images, targets = random_batch(batch_size, 3, sizes['image_size'], classes, speed)
    if inference:
        net.eval()

        def step():
            with torch.no_grad(), speed.autocast():
                forward(images)
        return step
    net.train()
    optimizer = torch.optim.SGD(net.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    criterion = nn.CrossEntropyLoss()
    scaler = precision.grad_scaler(speed.dtype, speed.device)
    return lambda: train_step(net, forward, images, targets, criterion, optimizer, speed.autocast, scaler, 0.4, 5.0)


def epoch_case(loader, batch_size):
    """A whole epoch of `loader` per call: a loader's workers read ahead, so only an epoch, their start and their
    waits included, shows the rate they keep up."""
    return Timed(batch_size, lambda: sum(1 for _ in loader.iterate(0)), batches=len(loader))


def loader_case(batch_size, sizes, speed):
    count = batch_size * 8
    split = data.ImageData(torch.randint(0, 256, (count, 3, sizes['image_size'], sizes['image_size']),
                                         dtype=torch.uint8), torch.randint(0, 10, (count,)))
    info = data.DatasetInfo('synthetic', 10, 3, sizes['image_size'], (0.5,) * 3, (0.25,) * 3)
    loader = loaders.DeviceLoader(split, info, batch_size, device=speed.device, shuffle=True, augment=True,
                                  cutout_length=16, channels_last=speed.channels_last)
    return epoch_case(loader, batch_size)


def jpeg_loader_case(batch_size, decoder, tiny, speed):
    """Streaming ImageNet's training pipeline from JPEG files (generated: 500 x 375, ImageNet's typical size), their
    decoding in the workers or on the device; images per second of the loader alone."""
    folder = tempfile.mkdtemp(prefix='bench-jpeg-')
    atexit.register(shutil.rmtree, folder, True)
    height, width, size = (48, 64, 32) if tiny else (375, 500, 224)
    rng = np.random.default_rng(0)
    samples = []
    for index in range(batch_size * 8):
        path = f'{folder}/{index}.JPEG'
        y, x = np.mgrid[0:height, 0:width]
        pixels = np.stack([x * 255 / width, y * 255 / height, rng.normal(128, 40, (height, width))], -1)
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
        samples.append((path, index % 10))
    pipeline = streaming.Pipeline('random_resized_crop', size, colour_jitter=True)
    files = streaming.StreamedFolder(folder, samples, [str(k) for k in range(10)], pipeline, decoder)
    info = data.DatasetInfo('imagenet', 10, 3, size, data.IMAGENET_MEAN, data.IMAGENET_STD)
    loader = loaders.FolderLoader(files, info, batch_size, device=speed.device, shuffle=True, augment=True,
                                  channels_last=speed.channels_last, workers=0 if tiny else 4)
    return epoch_case(loader, batch_size)


def latency_case(source, batch_size, sizes, speed):
    """(one inference of a batch, what runs it): of an exported file (export.load), or for 'eager' of
    DARTS_V2's evaluation network in PyTorch."""
    if source == 'eager':
        return train_case(batch_size, sizes, speed, inference=True), f'PyTorch on {speed.device}'
    run, shape, runtime = export.load(source, speed.device)
    images = torch.randn(batch_size, *shape, device=speed.device)
    return (lambda: run(images)), runtime


# ---------------------------------------------------------------------------------------------
# The command.

def build_parser():
    parser = utils.ArgumentParser(description='Measure images per second and peak memory of every step.')
    parser.add_argument('--cases', default=','.join(DEFAULT_CASES),
                        help=f'comma-separated subset of: {", ".join(CASES)} (default: {",".join(DEFAULT_CASES)}; '
                             'curvature: one --hessian_eigenvalue measurement of the DARTS supernet per step)')
    parser.add_argument('--methods', default=','.join(sorted(methods_lib.presets())), help='search presets to measure')
    parser.add_argument('--batch_sizes', type=utils.comma_list(int, 1), default=(96, 256),
                        help="comma-separated batch sizes of DARTS_V2's training and inference")
    parser.add_argument('--steps', type=utils.bounded(int, 1), default=20,
                        help='timed steps per case (the median is reported)')
    parser.add_argument('--warmup', type=utils.bounded(int, 0), default=5,
                        help='untimed steps first (cudnn autotuning, compilation)')
    parser.add_argument('--tiny', action='store_true', help='tiny networks and batches, for a smoke test')
    parser.add_argument('--baseline', action='store_true',
                        help="the original repositories' setting: float32, NCHW, no compilation, cudnn autotuning on")
    parser.add_argument('--output', default='bench.json', help='where to write the results as JSON')
    precision.add_speed_arguments(parser, compile_option=True)
    parser.add_argument('--device', default='auto', help='cpu, cuda, cuda:N, or auto')
    parser.add_argument('--latency', nargs='?', const='eager', metavar='FILE',
                        help="instead: inference latency at batch 1 and at --batch_sizes, of an exported network "
                             "(.onnx, .pt, .pt2 from test.py --export) or, without FILE, of DARTS_V2 in PyTorch")
    parser.add_argument('--latency_table', metavar='PATH',
                        help="instead: time every op of a supernet's edges, one image at a time, and write the table "
                             'that train_search.py --cost latency reads')
    parser.add_argument('--search_flags', default='', metavar='FLAGS',
                        help='with --latency_table: the flags of the search whose supernet is measured (its sizes, '
                             'dataset, search space)')
    return parser


def names_from(text, allowed, flag):
    """The comma-separated names given to `flag`, each one of `allowed`."""
    names = {name.strip() for name in text.split(',') if name.strip()}
    unknown = names - set(allowed)
    if unknown or not names:
        raise utils.UserError(f'{flag} {text!r} is not a comma-separated list of: {", ".join(sorted(allowed))}')
    return names


def build_plan(args, sizes, speed):
    """[(case name, build)] where build() returns the Timed case."""
    batches = [8] if args.tiny else list(args.batch_sizes)
    if args.latency:
        label = 'DARTS_V2 (eager)' if args.latency == 'eager' else args.latency
        return [(f'latency {label} b{b}', lambda b=b: Timed(b, *latency_case(args.latency, b, sizes, speed)))
                for b in dict.fromkeys([1, *batches])]
    cases = names_from(args.cases, CASES, '--cases')
    methods = names_from(args.methods, methods_lib.presets(), '--methods')
    plan = []
    if 'search' in cases:
        runs = [(method, method, []) for method in methods]
        runs += [(f'{method} (2nd order)', method, ['--unrolled']) for method in SECOND_ORDER if method in methods]
        plan += [(f'search {name}', lambda m=method, e=extra: Timed(*search_case(m, e, sizes, args.tiny, speed)[:2]))
                 for name, method, extra in sorted(runs)]
    for case, inference in (('train', False), ('infer', True)):
        if case in cases:
            plan += [(f'{case} DARTS_V2 b{b}', lambda b=b, i=inference: Timed(b, train_case(b, sizes, speed, i)))
                     for b in batches]
    if 'curvature' in cases:
        plan += [('curvature darts', lambda: Timed(*curvature_case(sizes, args.tiny, speed)))]
    if 'loader' in cases:
        plan += [(f'loader b{batches[0]}', lambda: loader_case(batches[0], sizes, speed))]
        plan += [(f'loader imagenet jpeg, decoded in {where} b{batches[0]}',
                  lambda d=decoder: jpeg_loader_case(batches[0], d, args.tiny, speed))
                 for where, decoder in (('workers', 'workers'), ('the device', 'device'))]
    return plan


def latency_table(args, device):
    search_args, _, _ = resolve_arguments(build_search_parser(), shlex.split(args.search_flags))
    size = search_args.image_size or data.DEFAULT_IMAGE_SIZE[search_args.dataset]
    info = data.DatasetInfo(search_args.dataset, 10, 3, size, (0.5,) * 3, (0.25,) * 3)
    stage = search_stages(search_args)[0]
    arch = build_architecture(search_args, info, stage.layers, stage.partial_channels, None)
    table = cost.measure_latency_table(arch, device, args.latency_table, args.steps, args.warmup)
    print(f'wrote {args.latency_table}: {len(table)} ops, from {min(table.values()):.3f} to '
          f'{max(table.values()):.3f} ms; search with: python train_search.py '
          f'{args.search_flags + " " if args.search_flags else ""}--cost latency --latency_table {args.latency_table}')
    return table


def main(argv=None):
    args = build_parser().parse_args(argv)
    device = utils.get_device(args.device)
    if args.latency_table:
        utils.check_output_folder(args.latency_table, '--latency_table')
        return latency_table(args, device)
    utils.check_output_folder(args.output, '--output')
    utils.configure_device(device, args.deterministic)  # autotuning unless --deterministic, as the scripts
    if args.baseline:
        speed = Speed(None, False, False, device)
    else:
        speed = Speed(precision.amp_dtype(args.amp, device), precision.use_channels_last(args.channels_last, device),
                      args.compile, device)
    sizes = TINY if args.tiny else PAPER
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    setting = environment(device, speed, args.baseline)
    print('; '.join(f'{key}: {value}' for key, value in setting.items()))
    results = []
    print(f'{"case":<32} {"batch":>5} {"images/s":>10} {"ms/step":>9} {"peak MB":>9}')
    for name, build in build_plan(args, sizes, speed):
        torch.manual_seed(0)
        utils.reset_peak_memory(device)
        try:
            case = build()
        except utils.UserError as refused:  # what the scripts refuse (an fp16 search) is not timed
            results.append({'case': name, 'refused': str(refused)})
            print(f'{name:<32} not timed: {refused}', flush=True)
            continue
        seconds = utils.timed(case.step, sync, args.steps, args.warmup) / case.batches
        row = {'case': name, 'batch': case.batch_size, 'images_per_s': case.batch_size / seconds,
               'ms_per_step': seconds * 1e3, 'peak_memory_mb': utils.peak_memory_mb(device),
               **({'runtime': case.runtime} if case.runtime else {})}
        results.append(row)
        print(f'{name:<32} {case.batch_size:>5} {row["images_per_s"]:>10.1f} {row["ms_per_step"]:>9.2f} '
              f'{row["peak_memory_mb"]:>9.0f}{"  " + case.runtime if case.runtime else ""}', flush=True)
    report = {**setting, 'cpu_threads': torch.get_num_threads(), 'commit': git_commit(), 'sizes': sizes,
              'results': results}
    utils.write_json(args.output, report)
    print(f'wrote {args.output}')
    return report


def environment(device, speed, baseline):
    """What a figure depends on: the device, PyTorch, cuDNN, TF32 and the speed settings."""
    cuda = device.type == 'cuda'
    return {'device': torch.cuda.get_device_name(device) if cuda else cpu_name(),
            'torch': torch.__version__, 'cudnn': torch.backends.cudnn.version() if cuda else None,
            'tf32_matmul': torch.backends.cuda.matmul.allow_tf32, 'tf32_cudnn': torch.backends.cudnn.allow_tf32,
            'cudnn_autotuning': torch.backends.cudnn.benchmark, 'baseline': baseline,
            'amp': {None: 'float32', torch.bfloat16: 'bf16', torch.float16: 'fp16'}[speed.dtype],
            'channels_last': speed.channels_last, 'compile': speed.compile}


def cpu_name():
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor() or 'cpu'


def git_commit():
    try:
        return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


if __name__ == '__main__':
    utils.run_cli(main)
