"""Every --method preset's search settings in both search spaces, against its authors' code.

Each table row lists what a preset's authors set differently from DARTS's search, with the file each value comes
from; the test compares every setting of the search that shapes its result (all of args.json but where data,
output and devices go) with DARTS's values updated by the row, so a setting nobody wrote down fails the test.
"""
import pytest

import train_search
from utils import UserError

# quark0/darts f276dd3, cnn/train_search.py (argparse defaults), and for the flags DARTS has not, the value
# that leaves DARTS as it is.
DARTS = dict(
    cutout=False, cutout_length=16, train_portion=0.5, init_channels=16, layers=8, primitives='darts',
    partial_channels=1, max_skip=None, location='no_attention', pool_bn=True, alpha_attention=False, batch_size=64,
    learning_rate=0.025, learning_rate_min=0.001, momentum=0.9, weight_decay=3e-4, nesterov=False, grad_clip=5,
    epochs=50, unrolled=False, step_order='architecture_first', arch_learning_rate=3e-4, arch_weight_decay=1e-3,
    arch_beta1=0.5, arch_grad_clip=0.0, warmup_epochs=0, edge_norm=None,
    # the method flags, off (their other values apply only when a method is on)
    hd_on_weights=False, topk_on_alphas=False, topk_on_weights=False, temperature=1.0,
    linear_temperature_increase=False, linear_temperature_max=200.0, dal_on_alphas=False, dal_on_weights=False,
    dal_factor=1.0, dal_starting_epoch=0, da2s=False, da2s_weight=0.1, da2s_edge_factor=4.0, da2s_alpha_start=8,
    cost_penalty=0.0, cost='params', stage_layers=None, stage_keep=None, skip_dropout=None,
    stage_partial_channels=None, stage_continue=False, stage_lr='restart', beta_decay_weight=0.0, auxiliary_skip=0.0,
    auxiliary_skip_epochs=50, sigmoid_weights=False, zero_one_weight=10.0, fair_threshold=0.85, sdarts='off',
    sdarts_epsilon=0.3, gdas=False, tau_max=10.0, tau_min=0.1, dirichlet=False, dirichlet_kl=0.0,
    selection='darts', pt_interval=5, pt_batches=0, fix_alpha=False, drop_path_prob=0.0, early_stop='off', es_window=5,
    es_factor=1.3, es_start_epoch=10, es_delta=4, ada_factor=3.0, ada_max_weight_decay=243e-4, ada_rollback_epochs=0,
    lr_ramp_epochs=0, train_subset=None, arch_subset=None)
# Where the data, the output and the devices are, and what is only measured: no part of a method's settings.
PLACES = {'method', 'dataset', 'data', 'image_size', 'in_channels', 'num_classes', 'synthetic_train_size',
          'synthetic_test_size', 'synthetic_seed', 'held_out_fraction', 'workers', 'split_file', 'search_space',
          'benchmark', 'latency_table', 'amp', 'channels_last', 'save', 'exp_path', 'resume', 'seed', 'device', 'gpu',
          'report_freq', 'tensorboard', 'hessian_eigenvalue', 'hessian_batches', 'deterministic', 'subset_file',
          'in_memory_limit', 'decoder'}

DARTS_SPACE = {
    'darts': {},
    # automl/RobustDARTS 3dec3fe: src/search/args.py (--early_stop 1, --window 5, --factor 1.3, --es_start_epoch 10,
    # --delta 4), scripts/DARTS_search.sh (--unrolled, --report_freq_hessian 2: the eigenvalue every 2 epochs).
    'darts_es': dict(early_stop='es', unrolled=True),
    # scripts/DARTS-ADA_search.sh: --early_stop 3 --mul_factor 10 --max_weight_decay 0.03 --extra_rollback_epochs 0.
    'darts_ada': dict(early_stop='ada', unrolled=True, ada_factor=10.0, ada_max_weight_decay=0.03),
    # RobustDARTS's DP and L2 at the largest values of the grid of its scripts/start_search.sh (drop path 0 to 0.6,
    # weight decay 3e-4 * 3^k up to 0.0243), with --cutout (which its Helper turns off without drop path) and
    # --unrolled as scripts/DARTS_search.sh passes them.
    'rdarts_dp': dict(drop_path_prob=0.6, cutout=True, unrolled=True),
    'rdarts_l2': dict(weight_decay=243e-4, unrolled=True),
    # yuhuixu1993/PC-DARTS b74702f, train_search.py: argparse defaults, k = 4 in model_search.py, betas (edge
    # normalisation) in model_search.py, the architecture steps from epoch 15.
    'pc_darts': dict(partial_channels=4, edge_norm=True, batch_size=256, learning_rate=0.1, learning_rate_min=0.0,
                     arch_learning_rate=6e-4, warmup_epochs=15),
    # Its train_search_imagenet.py (argparse defaults, begin 35, lr * (epoch + 1) / 5 for the first 5 epochs at batches
    # over 256, clip_grad_norm_ of arch_parameters() at grad_clip 5 before optimizer_a.step()) and
    # model_search_imagenet.py (its MixedOp searches channels // 2: K = 2), on the 10% and 2.5% of train/ its comment
    # names.
    'pc_darts_imagenet': dict(partial_channels=2, edge_norm=True, batch_size=1024, learning_rate=0.5,
                              learning_rate_min=0.0, lr_ramp_epochs=5, arch_learning_rate=6e-3, warmup_epochs=35,
                              train_subset=0.1, arch_subset=0.025, arch_grad_clip=5.0),
    # The seed documents (shared/seeds): alpha-DARTS (000), Att-DARTS (001), DADARTS (002), DA2S (004).
    'alpha_darts': dict(alpha_attention=True, partial_channels=4, edge_norm=True, primitives='alpha_darts',
                        warmup_epochs=15, learning_rate_min=0.0, arch_learning_rate=6e-4, epochs=80),
    'att_darts': dict(location='after_every'),
    'dadarts': dict(dal_on_alphas=True, topk_on_alphas=True, linear_temperature_increase=True,
                    linear_temperature_max=200.0, hd_on_weights=True),
    'da2s': dict(da2s=True, edge_norm=False),
    # Sunshine-Ye/Beta-DARTS f307704, optimizers/darts/architect.py (weight 50 * epoch / 100); sota/cnn/spaces.py
    # space s5 (no none), the default of sota/cnn/train_search.py.
    'beta_darts': dict(beta_decay_weight=50.0, primitives='darts_without_none'),
    # Meituan-AutoML/DARTS- adb81a8, src/search/args.py: --auxiliary_skip, --skip_beta 1, --decay_max_epoch 50.
    'darts_minus': dict(auxiliary_skip=1.0),
    # xiaomi-automl/FairDARTS 270cfc9, fairdarts/train_search.py: batch 128, learning rate 0.005, architecture 3e-3,
    # --arch_lr_gamma 0.9 (Adam's beta1 in fairdarts/architect.py), --aux_loss_weight 10, PRIMITIVES without none.
    'fair_darts': dict(sigmoid_weights=True, primitives='darts_without_none', batch_size=128, learning_rate=0.005,
                       arch_learning_rate=3e-3, arch_beta1=0.9),
    # xiangning-chen/SmoothDARTS d3dbfed, sota/cnn/train_search.py: --perturb_alpha random or pgd_linf, space s5 of
    # sota/cnn/spaces.py (no none), --epsilon_alpha 0.3.
    'sdarts_rs': dict(sdarts='rs', primitives='darts_without_none'),
    'sdarts_adv': dict(sdarts='adv', primitives='darts_without_none'),
    # D-X-Y/AutoDL-Projects f46486e, configs/search-opts/GDAS-NASNet-CIFAR.config (250 epochs, batch 256, decay
    # 5e-4, Nesterov), exps/NAS-Bench-201-algos/GDAS.py (the weight step first; tau from 10 to 0.1 in GDAS.sh).
    'gdas': dict(gdas=True, epochs=250, batch_size=256, weight_decay=5e-4, nesterov=True, step_order='weights_first'),
    # xiangning-chen/DrNAS f2caa4d, DARTS-space/train_search.py: C = 36, 20 cells, ks [6, 4], num_keeps [7, 4],
    # train_epochs [25, 25] on one schedule, learning rate 0.1 to 0, architecture 6e-4 from epoch 10 of each
    # stage; model_search.py: PRIMITIVES without none, pooling without BatchNorm, no edge normalisation.
    'drnas': dict(dirichlet=True, primitives='darts_without_none', partial_channels=6, edge_norm=False,
                  init_channels=36, stage_layers=(20, 20), stage_keep=(4,), stage_partial_channels=(6, 4),
                  stage_continue=True, epochs=25, learning_rate=0.1, learning_rate_min=0.0, arch_learning_rate=6e-4,
                  warmup_epochs=10, pool_bn=False),
    # chenxin061/pdarts b880e87, train_search.py: batch 96, learning rate to 0, architecture 6e-4 clipped at norm 5,
    # 25 epochs a stage, the architecture from epoch 10 (eps_no_archs), 5 + 0, 6, 12 cells, num_to_keep [5, 3],
    # dropout rates 0, 0.4, 0.7 (its README's CIFAR-10 command), at most 2 skip connections.
    'pdarts': dict(stage_layers=(5, 11, 17), stage_keep=(5, 3), skip_dropout=(0.0, 0.4, 0.7), epochs=25,
                   warmup_epochs=10, batch_size=96, learning_rate_min=0.0, arch_learning_rate=6e-4, max_skip=2,
                   arch_grad_clip=5.0),
}

# NAS-Bench-201's own DARTS search: D-X-Y/AutoDL-Projects f46486e, configs/nas-benchmark/algos/DARTS.config
# (50 epochs, batch 64, 0.025 to 0.001, decay 5e-4, Nesterov), scripts-search/NAS-Bench-201-algos/DARTS-V1.sh
# (N = 5, C = 16; architecture 3e-4, decay 1e-3) and exps/NAS-Bench-201-algos/DARTS-V1.py (the weight step
# first; DARTS-V2.py, second order, the architecture step first).
NB201_DARTS = dict(layers=5, weight_decay=5e-4, nesterov=True, step_order='weights_first')
# SDARTS's nasbench201/train_search.py (xiangning-chen/SmoothDARTS d3dbfed), copied by β-DARTS (Sunshine-Ye/
# Beta-DARTS f307704, nasbench201/train_search.py) and DARTS-PT (ruocwang/darts-pt 4ec3149,
# nasbench201/train_search.py): N = 5, C = 16, 100 epochs, weight decay 3e-4, plain momentum, the architecture
# step first.
NB201_SDARTS = dict(layers=5, epochs=100, weight_decay=3e-4, nesterov=False, step_order='architecture_first')
NB201 = {
    'darts': NB201_DARTS,
    'beta_darts': {**NB201_SDARTS, 'beta_decay_weight': 50.0, 'primitives': 'darts_without_none'},
    'sdarts_rs': {**NB201_SDARTS, 'sdarts': 'rs', 'primitives': 'darts_without_none'},
    'sdarts_adv': {**NB201_SDARTS, 'sdarts': 'adv', 'primitives': 'darts_without_none'},
    # AutoDL-Projects f46486e, configs/nas-benchmark/algos/GDAS.config: 250 epochs of batch 64, decay 5e-4,
    # Nesterov; GDAS.sh: tau 10 to 0.1.
    'gdas': {**NB201_DARTS, 'gdas': True, 'epochs': 250},
    # xiangning-chen/DrNAS f2caa4d, 201-space/train_search_progressive.py: C = 16, N = 5, ks [4, 2], num_keeps
    # [5, 3], train_epochs [50, 50] on one cosine schedule, 0.025 to 0.001, decay 3e-4, architecture 3e-4 from
    # epoch 10 of each stage, plain momentum, the architecture step first.
    'drnas': {**DARTS_SPACE['drnas'], 'layers': 5, 'init_channels': 16, 'stage_layers': (5, 5), 'stage_keep': (3,),
              'stage_partial_channels': (4, 2), 'partial_channels': 4, 'epochs': 50, 'learning_rate': 0.025,
              'learning_rate_min': 0.001, 'weight_decay': 3e-4, 'arch_learning_rate': 3e-4, 'nesterov': False,
              'step_order': 'architecture_first'},
}
# Their authors published no NAS-Bench-201 search: their DARTS-space settings over the benchmark's DARTS search.
NB201.update({name: {**NB201_DARTS, **DARTS_SPACE[name]}
              for name in ('pc_darts', 'pc_darts_imagenet', 'alpha_darts', 'dadarts', 'da2s', 'darts_minus',
                           'fair_darts')})
# DARTS-ES (RobustDARTS searched no NAS-Bench-201): second order there steps the architecture first, as DARTS-V2.
NB201['darts_es'] = {**NB201_DARTS, **DARTS_SPACE['darts_es'], 'step_order': 'architecture_first'}
NB201['darts_ada'] = {**NB201_DARTS, **DARTS_SPACE['darts_ada'], 'step_order': 'architecture_first'}
NB201['rdarts_l2'] = {**NB201_DARTS, **DARTS_SPACE['rdarts_l2'], 'step_order': 'architecture_first'}


def settings(argv):
    args, _, _ = train_search.resolve_arguments(train_search.build_parser(), argv)
    return {name: value for name, value in vars(args).items() if name not in PLACES}


def test_the_tables_cover_every_preset_and_every_setting():
    assert set(DARTS_SPACE) == set(train_search.methods.presets())
    assert set(NB201) | {'att_darts', 'pdarts', 'rdarts_dp'} == set(DARTS_SPACE)
    assert set(settings([])) == set(DARTS)


@pytest.mark.parametrize('method', sorted(train_search.methods.presets()))
def test_a_preset_in_the_darts_space_has_its_authors_settings(method):
    assert method in DARTS_SPACE, f'write the settings of --method {method} and their sources into DARTS_SPACE'
    assert settings(['--method', method]) == {**DARTS, **DARTS_SPACE[method]}


@pytest.mark.parametrize('method', sorted(NB201))
def test_a_preset_on_nas_bench_201_has_its_authors_settings(method):
    assert settings(['--search_space', 'nas_bench_201', '--method', method]) == {**DARTS, **NB201[method]}


def test_second_order_darts_on_nas_bench_201_steps_the_architecture_first_as_darts_v2():
    assert settings(['--search_space', 'nas_bench_201', '--unrolled'])['step_order'] == 'architecture_first'
    assert settings(['--search_space', 'nas_bench_201', '--no_nesterov'])['nesterov'] is False


@pytest.mark.parametrize('method, flag', [('att_darts', '--location after_every'), ('pdarts', '--max_skip')])
def test_a_preset_of_the_darts_cell_alone_is_refused_on_nas_bench_201_in_one_sentence(method, flag):
    with pytest.raises(UserError, match=f'^{flag}.*set by --method {method}.*cannot apply to --search_space '
                                        'nas_bench_201'):
        settings(['--search_space', 'nas_bench_201', '--method', method])


def test_darts_pt_searches_first_as_its_code_unless_a_preset_or_a_flag_says_otherwise():
    # ruocwang/darts-pt 4ec3149: sota/cnn/train_search.py searches space s5 (sota/cnn/spaces.py, no none);
    # nasbench201/train_search.py 100 epochs at weight decay 3e-4, plain momentum, the architecture step first.
    assert settings(['--selection', 'pt']) == {**DARTS, 'selection': 'pt', 'primitives': 'darts_without_none'}
    assert settings(['--search_space', 'nas_bench_201', '--selection', 'pt']) == {**DARTS, **NB201_SDARTS,
                                                                                   'selection': 'pt'}
    assert settings(['--selection', 'pt', '--method', 'gdas']) == {
        **DARTS, **DARTS_SPACE['gdas'], 'selection': 'pt', 'primitives': 'darts_without_none'}
    assert settings(['--selection', 'pt', '--method', 'da2s', '--primitives', 'darts'])['primitives'] == 'darts'
    assert settings(['--search_space', 'nas_bench_201', '--selection', 'pt', '--method', 'gdas']) == {
        **DARTS, **NB201['gdas'], 'selection': 'pt'}
