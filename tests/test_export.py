"""export.py and test.py --export: every network kind in every format, run back and compared with PyTorch's
logits; a clear sentence for what cannot be exported."""
import importlib

import pytest
import torch
import torch.nn as nn
from conftest import load_script

import export
import genotypes
import model as model_lib
from utils import UserError

test_script = load_script('test')
train = load_script('train')

NETWORKS = {
    'darts cell': (dict(kind='cifar', C=8, layers=3, auxiliary=True, image_size=32), genotypes.DARTS_V2),
    'attention cell': (dict(kind='cifar', C=16, layers=3, auxiliary=False, image_size=32), genotypes.Att_DARTS),
    'bottleneck attention': (dict(kind='cifar', C=16, layers=3, auxiliary=False, image_size=32),
                             genotypes.make_genotype(*genotypes.DARTS_V2[:4], normal_bottleneck='GE_theta-plus',
                                                     reduce_bottleneck='SE')),
    'nas-bench-201 cell': (dict(kind='nb201', C=8, layers=1, auxiliary=False, image_size=32),
                           genotypes.parse_genotype('|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+'
                                                    '|none~0|nor_conv_1x1~1|nor_conv_3x3~2|')),
    'imagenet network': (dict(kind='imagenet', C=8, layers=3, auxiliary=True, image_size=224), genotypes.PCDARTS),
}


def network(name):
    config, genotype = NETWORKS[name]
    torch.manual_seed(0)
    net = model_lib.build_network({**config, 'num_classes': 10, 'in_channels': 3}, genotype).eval()
    with torch.no_grad():  # BN statistics away from the initial ones, so that they count in the comparison
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return net, torch.randn(3, 3, config['image_size'], config['image_size'])


@pytest.mark.parametrize('ending', ['onnx', 'pt', 'pt2'])
@pytest.mark.parametrize('name', NETWORKS)
def test_every_network_kind_exports_and_runs_back_with_the_same_logits(name, ending, tmp_path):
    net, images = network(name)
    path = str(tmp_path / f'net.{ending}')
    assert export.export(net, path, images) == export.FORMATS[f'.{ending}']
    assert export.check(net, path, images) < 1e-3
    run, shape, runtime = export.load(path, torch.device('cpu'))
    assert shape == tuple(images.shape[1:])
    assert runtime == {'onnx': 'onnxruntime CPUExecutionProvider', 'pt': 'TorchScript on cpu',
                       'pt2': 'torch.export on cpu'}[ending]
    other_batch = torch.randn(5, *shape)  # the batch size stays free
    with torch.no_grad():
        assert torch.allclose(run(other_batch), export.Logits(net)(other_batch), atol=1e-3)


def test_an_op_the_exporter_cannot_translate_is_named(tmp_path):
    class Spectral(nn.Module):
        def forward(self, x):
            return torch.linalg.eigvalsh(x @ x.transpose(-1, -2))

    with pytest.raises(UserError, match=r'could not export to ONNX: the network uses aten::linalg_eigvalsh'):
        export.export(Spectral(), str(tmp_path / 'net.onnx'), torch.randn(2, 3, 3))
    assert not (tmp_path / 'net.onnx').exists()


def test_bad_files_and_a_missing_onnxruntime_give_one_sentence(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r'must end in \.onnx \(ONNX\), \.pt \(TorchScript\) or \.pt2'):
        export.export_format('net.tflite')
    with pytest.raises(UserError, match='does not exist; write one with: python test.py'):
        export.load(str(tmp_path / 'missing.pt'), torch.device('cpu'))
    net, images = network('darts cell')
    export.export(net, str(tmp_path / 'net.onnx'), images)
    real_import = importlib.import_module
    monkeypatch.setattr(importlib, 'import_module', lambda name: (_ for _ in ()).throw(ImportError)
                        if name == 'onnxruntime' else real_import(name))
    with pytest.raises(UserError, match='running an ONNX file needs onnxruntime; install it with '
                                        '`pip install onnxruntime`'):
        export.check(net, str(tmp_path / 'net.onnx'), images)


@pytest.mark.slow
def test_test_py_exports_trained_weights_instead_of_testing_them(in_tmp, capsys):
    train.main(['--dataset', 'synthetic', '--image_size', '16', '--synthetic_train_size', '64', '--synthetic_test_size',
                '32', '--init_channels', '8', '--layers', '3', '--batch_size', '16', '--epochs', '1', '--device', 'cpu',
                '--auxiliary', '--exp_path', 'eval'])
    for ending in ('onnx', 'pt', 'pt2'):
        result = test_script.main(['--model_path', 'eval/weights.pt', '--export', f'net.{ending}', '--batch_size', '8'])
        assert result['max_abs_difference'] < 1e-3 and (in_tmp / f'net.{ending}').is_file()
        assert f'wrote net.{ending} ({export.FORMATS["." + ending]}); on a test batch of 8' in capsys.readouterr().out
    assert not (in_tmp / 'eval' / 'test.json').exists()
    with pytest.raises(UserError, match='--export net.h5: the file must end in'):
        test_script.main(['--model_path', 'eval/weights.pt', '--export', 'net.h5'])


def test_bench_times_an_exported_network_and_the_eager_one_at_batch_1_and_the_given_size(tmp_path, capsys):
    bench = load_script('bench')
    net, images = network('darts cell')
    export.export(net, str(tmp_path / 'net.onnx'), images)
    flags = ['--steps', '1', '--warmup', '0', '--device', 'cpu', '--batch_sizes', '4']
    report = bench.main(['--latency', str(tmp_path / 'net.onnx'), *flags, '--output', str(tmp_path / 'onnx.json')])
    assert [(row['case'], row['batch']) for row in report['results']] == [
        (f'latency {tmp_path / "net.onnx"} b1', 1), (f'latency {tmp_path / "net.onnx"} b4', 4)]
    eager = bench.main(['--latency', '--tiny', *flags, '--output', str(tmp_path / 'eager.json')])
    assert [row['case'] for row in eager['results']] == ['latency DARTS_V2 (eager) b1', 'latency DARTS_V2 (eager) b8']
    assert all(row['ms_per_step'] > 0 for row in report['results'] + eager['results'])
    assert 'latency DARTS_V2 (eager) b1' in capsys.readouterr().out
