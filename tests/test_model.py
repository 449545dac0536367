import pytest
import torch

import checkpoints
import genotypes
import model
import operations
import utils
from model import NetworkCIFAR, NetworkImageNet


def test_darts_v2_sizes_match_the_paper_to_the_parameter():
    cifar = NetworkCIFAR(36, 10, 20, True, genotypes.DARTS_V2)
    imagenet = NetworkImageNet(48, 1000, 14, True, genotypes.DARTS_V2)
    assert utils.count_parameters_in_millions(cifar) == pytest.approx(3.349342, abs=5e-7)
    assert utils.count_parameters_in_millions(imagenet) == pytest.approx(4.718752, abs=5e-7)


@pytest.mark.parametrize('name, expected', [('PC_DARTS_cifar', 3.6), ('ALPHA_DARTS', 3.3), ('DARTS_V1', 3.2)])
def test_other_published_cells_have_their_reported_size(name, expected):
    params = utils.count_parameters_in_millions(NetworkCIFAR(36, 10, 20, True, genotypes.GENOTYPES[name]))
    print(f'{name}: {params:.6f} M parameters')
    assert params == pytest.approx(expected, abs=0.06)


def test_state_dict_names_are_those_of_the_darts_reference():
    keys = set(NetworkCIFAR(36, 10, 20, True, genotypes.DARTS_V2).state_dict())
    for key in ('stem.0.weight', 'stem.1.running_mean', 'cells.3.preprocess0.op.1.weight',
                'cells.3._ops.4.op.2.weight', 'cells.6.preprocess1.op.2.weight', 'cells.7.preprocess0.conv_1.weight',
                'cells.7.preprocess0.bn.weight', 'auxiliary_head.features.2.weight',
                'auxiliary_head.features.6.running_var', 'auxiliary_head.classifier.weight', 'classifier.weight'):
        assert key in keys, key
    # SPEC's own example edge, whose op is a separable conv in PC-DARTS's normal cell.
    assert 'cells.3._ops.5.op.2.weight' in NetworkCIFAR(36, 10, 20, True, genotypes.PC_DARTS_cifar).state_dict()
    imagenet_keys = set(NetworkImageNet(48, 1000, 14, True, genotypes.DARTS_V2).state_dict())
    for key in ('stem0.0.weight', 'stem0.3.weight', 'stem1.1.weight', 'auxiliary_head.features.5.weight'):
        assert key in imagenet_keys, key
    # DARTS's ImageNet auxiliary head has no BatchNorm after its last conv.
    assert 'auxiliary_head.features.6.running_var' not in imagenet_keys


@pytest.mark.parametrize('name', ['DARTS_V2', 'NASNet', 'AmoebaNet', 'PC_DARTS_image'])
def test_forward_shapes_in_training_and_evaluation(name):
    net = NetworkCIFAR(8, 10, 5, True, genotypes.GENOTYPES[name])
    net.drop_path_prob = 0.3
    x = torch.randn(3, 3, 32, 32)
    logits, logits_aux = net.train()(x)
    assert logits.shape == (3, 10) and logits_aux.shape == (3, 10)
    logits, logits_aux = net.eval()(x)
    assert logits.shape == (3, 10) and logits_aux is None


def test_imagenet_network_forward():
    net = NetworkImageNet(8, 7, 5, True, genotypes.DARTS_V2, image_size=64).train()
    logits, logits_aux = net(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 7) and logits_aux.shape == (2, 7)


def test_other_channels_and_small_images_work_with_the_auxiliary_head():
    net = NetworkCIFAR(8, 4, 5, True, genotypes.DARTS_V2, in_channels=1, image_size=16).train()
    logits, logits_aux = net(torch.randn(2, 1, 16, 16))
    assert logits.shape == (2, 4) and logits_aux.shape == (2, 4)


def test_drop_path_zeroes_whole_samples_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(4000, 2, 3, 3)
    out = operations.drop_path(x, 0.25)
    per_sample = out.flatten(1)
    kept = torch.tensor(1 / 0.75)
    assert ((per_sample == 0) | (per_sample == kept)).all()
    assert (per_sample == per_sample[:, :1]).all()
    assert out.mean().item() == pytest.approx(1.0, abs=0.05)


def test_drop_path_is_off_in_evaluation_and_skips_identity_edges():
    net = NetworkCIFAR(8, 10, 3, False, genotypes.DARTS_V2)
    net.drop_path_prob = 0.5
    x = torch.randn(2, 3, 16, 16)
    net.eval()
    assert torch.equal(net(x)[0], net(x)[0])
    cell = net.cells[0]
    skips = [isinstance(op, model.Identity) for op in cell._ops]
    assert any(skips) and cell._drop_path == [not s for s in skips]


def test_darts_style_release_loads(tmp_path):
    """A bare state_dict saved from DataParallel by PyTorch < 0.4.1 (no BatchNorm counters, the legacy
    non-zip file format) loads unchanged."""
    net = NetworkCIFAR(8, 10, 5, True, genotypes.DARTS_V2)
    released = {f'module.{key}': value for key, value in net.state_dict().items()
                if not key.endswith('num_batches_tracked')}
    path = tmp_path / 'cifar10_model.pt'
    torch.save(released, path, _use_new_zipfile_serialization=False)
    fresh = NetworkCIFAR(8, 10, 5, True, genotypes.DARTS_V2)
    checkpoints.load_weights(fresh, str(path))
    for key, value in net.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)


def test_build_network_from_a_config():
    config = dict(kind='cifar', C=8, num_classes=3, layers=4, auxiliary=False, in_channels=3, image_size=32)
    assert isinstance(model.build_network(config, genotypes.DARTS_V2), NetworkCIFAR)
    assert model.network_kind('imagenet', 224) == 'imagenet'
    assert model.network_kind('folder', 160) == 'imagenet'
    assert model.network_kind('cifar10', 32) == 'cifar'


def test_attention_cells_have_their_reported_size():
    att = utils.count_parameters_in_millions(NetworkCIFAR(36, 10, 20, True, genotypes.Att_DARTS))
    alpha = utils.count_parameters_in_millions(NetworkCIFAR(36, 10, 20, True, genotypes.ALPHA_DARTS))
    print(f'Att_DARTS: {att:.6f} M parameters, ALPHA_DARTS: {alpha:.6f} M parameters (CIFAR-10, C 36, 20 cells)')
    assert att == pytest.approx(3.2, abs=0.05) and alpha == pytest.approx(3.3, abs=0.05)
    imagenet = utils.count_parameters_in_millions(NetworkImageNet(48, 1000, 14, True, genotypes.Att_DARTS))
    assert imagenet == pytest.approx(4.6, abs=0.05)  # Att-DARTS reports 4.6 M on ImageNet


ATTENTION_GENOTYPES = {
    'after_every': genotypes.Att_DARTS,
    'end': genotypes.make_genotype(genotypes.DARTS_V2.normal, range(2, 6), genotypes.DARTS_V2.reduce, range(2, 6),
                                   normal_bottleneck='SE', reduce_bottleneck='GE_theta-plus'),
    'mixed_with_operation': genotypes.make_genotype(
        [('BAM', 0), ('sep_conv_3x3', 1), ('GE_theta-plus', 2), ('skip_connect', 0), ('DoubleAttention', 1),
         ('CBAM', 3), ('SE', 4), ('skip_connect', 2)], range(2, 6),
        [('SE', 0), ('CBAM', 1), ('max_pool_3x3', 2), ('GE_theta-plus', 0), ('BAM', 3), ('skip_connect', 1),
         ('DoubleAttention', 4), ('max_pool_3x3', 0)], range(2, 6)),
    'double_mixed': genotypes.make_genotype(
        [(op, index, second) for (op, index), second in zip(genotypes.DARTS_V2.normal, ['sep_conv_3x3', 'SE'] * 4)],
        range(2, 6),
        [(op, index, second) for (op, index), second in zip(genotypes.DARTS_V2.reduce, ['CBAM', 'avg_pool_3x3'] * 4)],
        range(2, 6)),
}


@pytest.mark.parametrize('location', sorted(ATTENTION_GENOTYPES))
def test_attention_genotypes_build_and_run(location):
    for network, size in ((NetworkCIFAR, 32), (NetworkImageNet, 64)):
        net = network(16, 5, 5, True, ATTENTION_GENOTYPES[location], image_size=size).train()
        net.drop_path_prob = 0.2
        logits, logits_aux = net(torch.randn(2, 3, size, size))
        assert logits.shape == (2, 5) and logits_aux.shape == (2, 5)


def test_att_darts_checkpoints_load_after_renaming(tmp_path):
    """Att-DARTS keeps ops in `_first_layers` and attentions in `_second_layers`, saved from DataParallel."""
    net = NetworkCIFAR(16, 10, 5, True, genotypes.Att_DARTS)
    theirs = {'module.' + key.replace('._ops.', '._first_layers.').replace('._attentions.', '._second_layers.'): value
              for key, value in net.state_dict().items()}
    assert any('_second_layers.1._mask.ChannelAttention.mlp.1.weight' in key for key in theirs)
    torch.save(theirs, tmp_path / 'cifar10_att.pt')
    fresh = NetworkCIFAR(16, 10, 5, True, genotypes.Att_DARTS)
    checkpoints.load_weights(fresh, str(tmp_path / 'cifar10_att.pt'))
    loaded = fresh.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in net.state_dict().items())


@pytest.mark.parametrize('network, C, layers, auxiliary, classes, channels', [
    (NetworkCIFAR, 8, 5, True, 4, 1), (NetworkCIFAR, 36, 20, False, 100, 3), (NetworkImageNet, 12, 6, True, 7, 3)])
def test_sizes_are_read_from_a_bare_state_dict(network, C, layers, auxiliary, classes, channels):
    net = network(C, classes, layers, auxiliary, genotypes.DARTS_V2, in_channels=channels)
    sizes = model.sizes_from_weights(net.state_dict())
    assert sizes == dict(kind='cifar' if network is NetworkCIFAR else 'imagenet', C=C, layers=layers,
                         auxiliary=auxiliary, num_classes=classes, in_channels=channels)
