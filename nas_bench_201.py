"""Looking NAS-Bench-201 cells up in the benchmark's tables, through its official API.

NATS-Bench's topology files (the `NATS-tss-v1_0-3ffb9-simple` folder, or a `.pickle.pbz2` file) are read by
`nats_bench`, NAS-Bench-201's `.pth` files by `nas_201_api` (pip package `nas-bench-201`). Both packages are
optional and imported only here. The files are pickles that the API itself loads, so use only the files
the benchmark's authors publish.
"""
import contextlib
import io
import os

from utils import UserError, optional_import

# (our name, the API's dataset, its field): accuracies after the benchmark's 200-epoch training, averaged
# over its seeds; CIFAR-10's validation comes from training on half of its training set, as the papers report.
TABULATED = (('cifar10_valid', 'cifar10-valid', 'valid-accuracy'), ('cifar10_test', 'cifar10', 'test-accuracy'),
             ('cifar100_valid', 'cifar100', 'valid-accuracy'), ('cifar100_test', 'cifar100', 'test-accuracy'),
             ('imagenet16_valid', 'ImageNet16-120', 'valid-accuracy'),
             ('imagenet16_test', 'ImageNet16-120', 'test-accuracy'))


class Benchmark:
    """One benchmark file or folder, opened once; `lookup(cell)` gives a cell's tabulated accuracies."""

    def __init__(self, path):
        if not os.path.exists(path):
            raise UserError(f'--benchmark {path} does not exist; give the NATS-Bench topology folder '
                            f'(NATS-tss-v1_0-3ffb9-simple) or file, or a NAS-Bench-201 .pth file, as downloaded')
        self.path = path
        with contextlib.redirect_stdout(io.StringIO()):  # the APIs print as they load
            try:
                if path.endswith('.pth'):
                    api = optional_import('nas_201_api', "--benchmark's API", 'nas-bench-201')
                    self.api = api.NASBench201API(path, verbose=False)
                else:
                    nats = optional_import('nats_bench', "--benchmark's API", 'nats_bench')
                    self.api = nats.create(path, 'tss', fast_mode=os.path.isdir(path), verbose=False)
            except UserError:
                raise
            except Exception as error:  # the APIs fail in their own ways on what is not theirs
                raise UserError(f'--benchmark {path} is not a NAS-Bench-201 or NATS-Bench topology benchmark '
                                f'({str(error).splitlines()[0][:100] if str(error) else type(error).__name__})') \
                    from None

    def lookup(self, cell):
        """{'benchmark_index': i, 'benchmark_cifar10_valid': accuracy, ...} for `cell`, or None if the
        benchmark does not hold it."""
        with contextlib.redirect_stdout(io.StringIO()):
            index = self.api.query_index_by_arch(str(cell))
            if index < 0:
                return None
            results = {'benchmark_index': index}
            for name, dataset, field in TABULATED:
                value = self.api.get_more_info(index, dataset, hp='200', is_random=False).get(field)
                results[f'benchmark_{name}'] = None if value is None else float(value)
        return results


def describe(results):
    """One line of tabulated accuracies, as the papers print them."""
    if results is None:
        return 'not in the benchmark'
    pairs = [(name, results[f'benchmark_{name}']) for name, _, _ in TABULATED]
    return ', '.join(f'{name.replace("_", " ")} {value:.2f}' for name, value in pairs if value is not None)
