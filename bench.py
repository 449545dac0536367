"""Benchmark: images per second and peak memory of every search method's step, DARTS_V2's training and inference.

It also times the data loader on its own, prints a table and writes JSON for BENCHMARKS.md.

    python bench.py                       # everything, at the papers' sizes
    python bench.py --baseline            # the same steps with every speed option off
    python bench.py --tiny --steps 1      # a smoke run (the tests use it)
    python bench.py --latency net.onnx --batch_sizes 64   # an exported network at batch 1 and 64

It reuses the scripts' own step functions, so it measures exactly what a run executes.
"""
import platform
import shlex
import subprocess

import torch

import cost
import data
import loop
import methods as methods_lib
import utils
from bench_cases import Speed, latency_case, loader_case, search_case, train_case
from train_search import build_model, plan_stages, resolve_arguments
from train_search import build_parser as build_search_parser

# Search benchmarks: (name, method preset, extra flags). Batch sizes and options are the presets'.
# Every --method preset is timed as it runs (a search in stages: its first stage), and these also second order.
SECOND_ORDER = ('darts', 'pc_darts', 'att_darts')
CASES = ('search', 'train', 'infer', 'loader')
PAPER = dict(search_channels=16, search_layers=8, train_channels=36, train_layers=20, image_size=32)
TINY = dict(search_channels=16, search_layers=3, train_channels=8, train_layers=5, image_size=16)


def build_parser():
    parser = utils.ArgumentParser(description='Measure images per second and peak memory of every step.')
    parser.add_argument('--cases', default=','.join(CASES),
                        help='comma-separated subset of: ' + ', '.join(CASES))
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
    loop.add_speed_arguments(parser, compile_option=True)
    parser.add_argument('--device', default='auto', help='cpu, cuda, cuda:N, or auto')
    parser.add_argument('--latency', nargs='?', const='eager', metavar='FILE',
                        help="instead: inference latency at batch 1 and at --batch_sizes, of an exported network "
                             "(.onnx, .pt, .pt2 from test.py --export) or, without FILE, of DARTS_V2 in PyTorch")
    parser.add_argument('--latency_table', metavar='PATH',
                        help="instead: time every op of a supernet's edges, one image at a time, and write the table "
                             'that train_search.py --cost latency reads')
    parser.add_argument('--search_flags', default='',
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
    """[(case name, build)] where build() returns (batch size, one step to time)."""
    batches = [8] if args.tiny else list(args.batch_sizes)
    if args.latency:
        label = 'DARTS_V2 (eager)' if args.latency == 'eager' else args.latency
        return [(f'latency {label} b{b}', lambda b=b: (b, *latency_case(args.latency, b, sizes, speed)))
                for b in dict.fromkeys([1, *batches])]
    cases = names_from(args.cases, CASES, '--cases')
    methods = names_from(args.methods, methods_lib.presets(), '--methods')
    plan = []
    if 'search' in cases:
        runs = [(method, method, []) for method in methods]
        runs += [(f'{method} (2nd order)', method, ['--unrolled']) for method in SECOND_ORDER if method in methods]
        plan += [(f'search {name}', lambda m=method, e=extra: search_case(m, e, sizes, args.tiny, speed)[:2])
                 for name, method, extra in sorted(runs)]
    for case, inference in (('train', False), ('infer', True)):
        if case in cases:
            plan += [(f'{case} DARTS_V2 b{b}', lambda b=b, i=inference: (b, train_case(b, sizes, speed, i)))
                     for b in batches]
    if 'loader' in cases:
        plan += [(f'loader b{batches[0]}', lambda: (batches[0], loader_case(batches[0], sizes, speed)))]
    return plan


def latency_table(args, device):
    search_args, _, _ = resolve_arguments(build_search_parser(), shlex.split(args.search_flags))
    size = search_args.image_size or data.DEFAULT_IMAGE_SIZE[search_args.dataset]
    info = data.DatasetInfo(search_args.dataset, 10, 3, size, (0.5,) * 3, (0.25,) * 3)
    stage = plan_stages(search_args)[0]
    supernet = build_model(search_args, info, stage.layers, stage.partial_channels, None)
    table = cost.measure_latency_table(supernet, device, args.latency_table, args.steps, args.warmup)
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
    utils.configure_device(device)  # cudnn autotuning, as the original repositories and our scripts have it
    if args.baseline:
        speed = Speed(None, False, False, device)
    else:
        speed = Speed(loop.amp_dtype(args.amp, device), loop.use_channels_last(args.channels_last, device),
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
            batch_size, step, *runtime = build()
        except utils.UserError as refused:  # what the scripts refuse (an fp16 search) is not timed
            results.append({'case': name, 'refused': str(refused)})
            print(f'{name:<32} not timed: {refused}', flush=True)
            continue
        seconds = utils.timed(step, sync, args.steps, args.warmup)
        row = {'case': name, 'batch': batch_size, 'images_per_s': batch_size / seconds, 'ms_per_step': seconds * 1e3,
               'peak_memory_mb': utils.peak_memory_mb(device), **({'runtime': runtime[0]} if runtime else {})}
        results.append(row)
        print(f'{name:<32} {batch_size:>5} {row["images_per_s"]:>10.1f} {row["ms_per_step"]:>9.2f} '
              f'{row["peak_memory_mb"]:>9.0f}{"  " + runtime[0] if runtime else ""}', flush=True)
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
