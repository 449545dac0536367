"""The GPU check: what only a GPU can show, measured in one command, into JSON files and a printed table.

    python gpu_check.py --output gpu-check             # on one H100 or H200: about 10 minutes (not yet run on one)
    python gpu_check.py --phases environment,projections,resume,precision,syncs --output gpu-check   # or in two
    python gpu_check.py --phases cuda_tests,speed,recompiles --output gpu-check                      # calls
    python gpu_check.py --dry --output gpu-check-dry   # every phase at toy size on the CPU (a test runs it)

Phases, in this order (by priority), each written to FOLDER/PHASE.json and printed as it ends; one that fails is
reported and the others still run:
  environment   GPU, PyTorch, cuDNN, TF32 and speed settings
  projections   the hours of the README's runs (NAS-Bench-201 sweep, DARTS's best of four, the ImageNet search
                on one and eight GPUs) from their steps' and the loader's measured rates
  resume        a training run stopped by SIGTERM and resumed, against an uninterrupted one, with and
                without --deterministic, and the time --deterministic costs
  precision     the second-order architecture gradient under bf16 against float32
  syncs         host synchronisations per search step of every preset (torch.cuda.set_sync_debug_mode)
  cuda_tests    python -m pytest -m cuda (4 processes where pytest-xdist is installed; one in a dry run)
  speed         bench.py's search and retraining steps, bf16 + channels_last and the baseline, with projections,
                and one measurement of the Hessian's dominant eigenvalue (--hessian_eigenvalue)
  recompiles    graphs that compiled retraining makes over epochs (drop path rising, partial last batches)
It exits 1 when a phase failed or a check did not hold.
"""
import contextlib
import functools
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import torch

import bench
import host_reads
import projections as projections_lib
import utils
from architect import Architect, SearchObjective
from architecture import Architecture
from methods import Methods
from model_search import Network
from precision import amp_dtype

ROOT = os.path.dirname(os.path.abspath(__file__))
# (epochs, images an epoch) of CIFAR-10's search (w trains on 25,000 images) and retraining (on 50,000).
CIFAR_RUNS = {'search': (50, 25_000), 'train': (600, 50_000)}


def build_parser():
    parser = utils.ArgumentParser(description='Measure on a CUDA GPU what the CPU cannot show (see BENCHMARKS.md).')
    parser.add_argument('--output', default='gpu-check', help='folder for the JSON files of the phases')
    parser.add_argument('--dry', action='store_true', help='every phase at toy size on the CPU, in under 3 minutes')
    parser.add_argument('--phases', default=','.join(PHASES), help='comma-separated subset of: ' + ', '.join(PHASES))
    parser.add_argument('--device', default='cuda', help='the CUDA device to check (ignored with --dry)')
    return parser


def default_speed(device):
    """The speed settings the scripts choose by default on `device` (bf16 and channels_last on a GPU)."""
    return bench.Speed(amp_dtype('auto', device), device.type == 'cuda', False, device)


def environment(device, dry, folder):
    setting = bench.environment(device, default_speed(device), baseline=False)
    if device.type == 'cuda':
        properties = torch.cuda.get_device_properties(device)
        setting.update(cuda=torch.version.cuda, gpus=torch.cuda.device_count(),
                       memory_gb=round(properties.total_memory / 2 ** 30, 1))
    return {**setting, 'python': sys.version.split()[0], 'ok': True}


@contextlib.contextmanager
def counting_syncs(device):
    """[(what, where)] of every host read (host_reads) and, on a GPU, of every synchronisation that
    torch.cuda.set_sync_debug_mode reports."""
    with host_reads.count_host_reads() as reads, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        if device.type == 'cuda':
            torch.cuda.set_sync_debug_mode('warn')
        try:
            yield reads
        finally:
            if device.type == 'cuda':
                torch.cuda.set_sync_debug_mode('default')
            reads.extend(('sync', str(w.message)[:200]) for w in caught if 'synchroniz' in str(w.message))


def syncs(device, dry, folder):
    """Per search step (architecture step, weight step, validation pass) of every case of host_reads.STEP_CASES;
    dry, of DARTS's, PC-DARTS's and those allowed to read (the test suite runs them all on the CPU)."""
    cases = [case for case in host_reads.STEP_CASES if case[3] or (case[0] in ('darts', 'pc_darts') and not case[2])] \
        if dry else host_reads.STEP_CASES
    rows, ok, steps = [], True, 1 if dry else 3
    for method, unrolled, flags, allowed in cases:
        name = ' '.join([method, *(['--unrolled'] * unrolled), *flags])
        sizes = dict(bench.TINY, search_channels=16 if method == 'att_darts' else 8)
        case = bench.search_case(method, ['--unrolled'] * unrolled + flags, sizes, True, default_speed(device))
        case.step(), case.validate()
        with counting_syncs(device) as reads:
            for _ in range(steps):
                case.step(), case.validate()
        synchronisations = sum(1 for what, _ in reads if what == 'sync') / steps
        host = len(reads) / steps - synchronisations
        held = host <= allowed and synchronisations <= allowed
        ok &= held
        rows.append({'case': name, 'host_reads_per_step': host, 'syncs_per_step': synchronisations,
                     'allowed': allowed, 'ok': held, 'where': sorted({where for _, where in reads})[:8]})
    return {'ok': ok, 'cases': rows}


def second_order_gradient(device, autocast, C, layers, batch_size, image_size):
    """(architecture gradient, finite-difference product) of one unrolled step of a DARTS supernet from fixed
    weights, momentum buffer and batches, under `autocast` (a context factory)."""
    torch.manual_seed(0)
    net = Network(C, 10, layers, image_size=image_size).to(device)
    arch = Architecture(net, Methods())
    optimizer = torch.optim.SGD(net.network_weights(), 0.025, momentum=0.9, weight_decay=3e-4)
    generator = torch.Generator().manual_seed(1)
    x_train, x_valid = (torch.randn(batch_size, 3, image_size, image_size, generator=generator).to(device)
                        for _ in range(2))
    y_train, y_valid = (torch.randint(0, 10, (batch_size,), generator=generator).to(device) for _ in range(2))
    optimizer.zero_grad()
    net.criterion(net(x_train, arch.weights()), y_train).backward()
    optimizer.step()
    architect = Architect(SearchObjective(arch, autocast), 0.9, 3e-4, 3e-4, 1e-3)
    products = []
    hessian_vector_product = architect._hessian_vector_product
    architect._hessian_vector_product = lambda *a: products.append(hessian_vector_product(*a)) or products[-1]
    architect.step(x_train, y_train, x_valid, y_valid, 0.025, optimizer, unrolled=True)
    return [p.grad.float().cpu() for p in net.arch_parameters()], [p.float().cpu() for p in products[0]]


def cosine(a, b):
    a, b = torch.cat([t.flatten() for t in a]), torch.cat([t.flatten() for t in b])
    return float(a @ b / (a.norm() * b.norm()))


def second_order_agreement(device, C=16, layers=5, batch_size=32, image_size=32):
    """Cosines of the bf16-autocast second-order gradient and finite-difference product with float32's."""
    sizes = (C, layers, batch_size, image_size)
    exact = second_order_gradient(device, contextlib.nullcontext, *sizes)
    bf16 = second_order_gradient(device, functools.partial(torch.autocast, device.type, dtype=torch.bfloat16), *sizes)
    return cosine(bf16[0], exact[0]), cosine(bf16[1], exact[1])


def precision(device, dry, folder):
    sizes = dict(C=8, layers=5, batch_size=16, image_size=16) if dry else {}
    gradient, product = second_order_agreement(device, **sizes)
    return {'gradient_cosine': gradient, 'product_cosine': product, 'ok': gradient >= 0.999 and product >= 0.99,
            'tf32_cudnn_outside_the_unrolled_step': torch.backends.cudnn.allow_tf32, 'sizes': sizes or 'C 16, 5 cells, '
            'batch 32, 32x32'}


def speed(device, dry, folder):
    """bench.py in the default speed settings and in the baseline, with each case's projected run time; and one
    --hessian_eigenvalue measurement, with what measuring every epoch adds to a search of 50 epochs."""
    timing = ['--tiny', '--steps', '1', '--warmup', '0'] if dry else ['--steps', '10']
    common = ['--methods', 'darts,pc_darts', '--cases', 'search,train', '--batch_sizes', '96',
              '--device', str(device)] + timing
    reports = {name: bench.main(common + flags + ['--output', os.path.join(folder, f'bench-{name}.json')])
               for name, flags in (('default', []), ('baseline', ['--baseline']))}
    rows = []
    for default, baseline in zip(reports['default']['results'], reports['baseline']['results']):
        epochs, images = CIFAR_RUNS[default['case'].split()[0]]
        rows.append({'case': default['case'], 'batch': default['batch'], 'images_per_s': default['images_per_s'],
                     'baseline_images_per_s': baseline['images_per_s'], 'peak_memory_mb': default['peak_memory_mb'],
                     'baseline_peak_memory_mb': baseline['peak_memory_mb'],
                     f'projected_{epochs}_epochs_h': epochs * images / default['images_per_s'] / 3600})
    measurements = timing if dry else ['--steps', '3', '--warmup', '1']  # each one is some seconds on a GPU
    curvature = bench.main(['--cases', 'curvature', '--device', str(device), *measurements,
                            '--output', os.path.join(folder, 'bench-curvature.json')])
    for row in curvature['results']:
        seconds = row['ms_per_step'] / 1e3
        rows.append({'case': row['case'], 'batch': row['batch'], 'seconds_per_measurement': seconds,
                     'peak_memory_mb': row['peak_memory_mb'], 'every_epoch_of_50_adds_h': 50 * seconds / 3600})
    return {'ok': True, 'cases': rows}


def projections(device, dry, folder):
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    return projections_lib.project(default_speed(device), sync, dry, folder)


def recompiles(device, dry, folder):
    """Graphs of compiled retraining over 3 epochs (dynamo's count, with the eager backend)."""
    from torch._dynamo.testing import CompileCounter
    train = load_module('train')
    counter, compile_with = CompileCounter(), torch.compile
    torch._dynamo.reset()
    torch.compile = lambda model, **options: compile_with(model, backend=counter)
    try:
        train.main(['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '200',
                    '--synthetic_test_size', '40', '--init_channels', '8', '--layers', '5', '--batch_size', '32',
                    '--epochs', '3', '--auxiliary', '--drop_path_prob', '0.2', '--compile', '--device', str(device),
                    '--exp_path', os.path.join(folder, 'compiled'), '--report_freq', '1000'])
    finally:
        torch.compile = compile_with
    return {'graphs': counter.frame_count, 'expected': 2, 'ok': counter.frame_count <= 2}


def load_module(name):
    spec = importlib.util.spec_from_file_location(f'gpu_check_{name}', os.path.join(ROOT, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_train(args, deterministic, stop_at=None):
    """train.py in its own process (with --deterministic if `deterministic`); with `stop_at`, SIGTERM once log.txt
    shows that step of epoch 1. Returns its wall time in seconds."""
    command = [sys.executable, os.path.join(ROOT, 'train.py')] + (['--deterministic'] if deterministic else [])
    started = time.time()
    process = subprocess.Popen(command + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, 'OMP_NUM_THREADS': '1'})
    if stop_at:
        log, deadline = os.path.join(args[args.index('--exp_path') + 1], 'log.txt'), time.time() + 300
        while time.time() < deadline and process.poll() is None:
            if os.path.isfile(log):
                with open(log, encoding='utf-8') as f:
                    if f'epoch 1/2 step {stop_at}/' in f.read():
                        process.send_signal(signal.SIGTERM)
                        break
            time.sleep(0.05)
    _, err = process.communicate(timeout=600)
    if process.returncode not in (0, 143 if stop_at else 0):
        raise RuntimeError(f'train.py ended with exit status {process.returncode}: {err[-1500:]}')
    return time.time() - started


def resume(device, dry, folder):
    # Stopped at step 9 of the second epoch: 12 steps an epoch in the dry run, 32 on a GPU.
    common = ['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '384' if dry else '1024',
              '--synthetic_test_size', '128', '--init_channels', '8', '--layers', '5', '--batch_size', '32',
              '--epochs', '2', '--auxiliary', '--cutout', '--device', str(device), '--report_freq', '4']
    result = {}
    for deterministic in (False, True):
        runs, seconds = {}, {}
        for name, stop_at in (('uninterrupted', None), ('resumed', 9)):
            path = os.path.join(folder, f'resume-{"deterministic" if deterministic else "default"}-{name}')
            shutil.rmtree(path, ignore_errors=True)  # a run cut short before, whose log would stop this one at once
            seconds[name] = run_train(common + ['--exp_path', path], deterministic, stop_at)
            if stop_at:
                run_train(['--resume', path], deterministic)
            runs[name] = torch.load(os.path.join(path, 'weights.pt'), weights_only=True, map_location='cpu')
        difference = max((runs['resumed'][key].float() - value.float()).abs().max().item()
                         for key, value in runs['uninterrupted'].items())
        result['deterministic' if deterministic else 'default'] = {'max_weight_difference': difference,
                                                                   'identical': difference == 0.0,
                                                                   'uninterrupted_s': seconds['uninterrupted']}
    # The scripts promise exactness on the CPU (where the tests hold it); on a GPU this measures whether
    # nondeterministic kernels leave a resumed run off the uninterrupted one, and by how much, and what
    # --deterministic costs in time (the same toy run, start-up included).
    slowdown = result['deterministic']['uninterrupted_s'] / result['default']['uninterrupted_s']
    return {**result, 'deterministic_slowdown': slowdown, 'ok': True}


def cuda_tests(device, dry, folder):
    parallel = ['-n', '4'] if importlib.util.find_spec('xdist') and not dry else []  # a dry run's CPU has few cores
    command = [sys.executable, '-m', 'pytest', '-q', '-m', 'cuda', 'tests/test_cuda.py', '-p', 'no:cacheprovider',
               *parallel]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60 if dry else 300)
    lines = done.stdout.strip().splitlines()
    return {'exit_status': done.returncode, 'summary': lines[-1] if lines else done.stderr[-500:],
            'ok': done.returncode == 0}


# By priority, so that a run cut short by a time limit has written what matters most: the README's figures, what
# --deterministic costs, whether bf16 keeps the second-order gradient, the host reads, the CUDA tests, the rest.
PHASES = {'environment': environment, 'projections': projections, 'resume': resume, 'precision': precision,
          'syncs': syncs, 'cuda_tests': cuda_tests, 'speed': speed, 'recompiles': recompiles}


def main(argv=None):
    args = build_parser().parse_args(argv)
    phases = bench.names_from(args.phases, PHASES, '--phases')
    if not args.dry and not torch.cuda.is_available():
        raise utils.UserError('there is no CUDA device here; run the check on a GPU machine, or give --dry')
    device = torch.device('cpu') if args.dry else utils.get_device(args.device)
    utils.configure_device(device)
    os.makedirs(args.output, exist_ok=True)
    results = {}
    for phase in (name for name in PHASES if name in phases):
        print(f'{phase} ...', flush=True)
        started = time.monotonic()
        try:
            result = PHASES[phase](device, args.dry, args.output)
        except Exception as error:  # a phase that fails is reported; the others still run
            result = {'ok': False, 'error': f'{type(error).__name__}: {error}'}
        result['seconds'] = round(time.monotonic() - started, 1)
        utils.write_json(os.path.join(args.output, f'{phase}.json'), result)
        results[phase] = result
        print(summary_table({phase: result}), flush=True)  # shown at once: a time limit may cut the run short
    if not all(result['ok'] for result in results.values()):
        raise utils.UserError(f'some checks did not hold; see {args.output}/*.json')
    return results


def summary_table(results):
    lines = [f'{"phase":<12} {"ok":<4} {"seconds":>7}  result']
    for phase, result in results.items():
        shown = {key: value for key, value in result.items() if key not in ('ok', 'seconds', 'cases', 'where')}
        lines.append(f'{phase:<12} {"yes" if result["ok"] else "NO":<4} {result["seconds"]:>7}  '
                     f'{json.dumps(shown)[:160]}')
        for row in result.get('cases', []):
            lines.append(f'{"":<12} {"" if row.get("ok", True) else "NO":<4} {"":>7}  '
                         f'{json.dumps({k: v for k, v in row.items() if k not in ("ok", "where")})[:160]}')
    return '\n'.join(lines)


if __name__ == '__main__':
    utils.run_cli(main)
