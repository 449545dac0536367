"""What a search writes: the plan at its start, and at each epoch's end the derived cell, the architecture
weights, the methods' terms and the cell's tabulated accuracies (log.txt, metrics.jsonl, genotype.json)."""
import nas_bench_201
import genotypes
import utils


def log_plan(logger, notes, arch, num_classes, batch_size, processes, stages, epochs, steps, warmup_epochs,
             valid_batches):
    """The first lines of a search: notes on its arguments, its space and methods, and the steps ahead."""
    for note in notes:
        logger.info(note)
    stem = (f" (PC-DARTS's ImageNet stem: {arch.net.image_size} pixels strided to {-(-arch.net.image_size // 8)} "
            'before the cells)' if hasattr(arch.net, 'stem0') else '')
    logger.info('search space: %s; supernet of %.6f M parameters%s; %d process(es) of batch %d; %d classes; methods: '
                '%s', ', '.join(arch.net.op_names), utils.count_parameters_in_millions(arch.net), stem, processes,
                batch_size, num_classes, ', '.join(type(method).__name__ for method in arch.methods) or 'DARTS')
    logger.info('%s%d epoch(s) of %d steps (each an architecture step, from epoch %d on, and a weight step), each '
                'epoch followed by a validation pass of %d batches', f'{stages} stages, each of ' if stages > 1 else '',
                epochs, steps, warmup_epochs, valid_batches)


def log_precision(logger, amp_dtype, unrolled):
    """One line on the number formats of the search step (`amp_dtype` None: float32)."""
    steps = 'float32' if amp_dtype is None else f'{str(amp_dtype).replace("torch.", "")} autocast'
    if unrolled:
        logger.info('precision: the weight step and the validation pass in %s; the second-order architecture gradient '
                    'in float32 with TF32 off, as its finite difference needs', steps)
    else:
        logger.info('precision: the architecture step, the weight step and the validation pass in %s', steps)


def report_architecture(run, arch, terms, valid, tables):
    """The end of a search epoch: the derived cell saved and logged with the methods' terms, one line per
    cell type and kind of weight, and its tabulated accuracies; returns (metrics, words of the epoch line)."""
    genotype, arch_weights = arch.genotype(), arch.described_weights()
    fields = {'valid_loss': valid['loss'], 'valid_top1': valid['top1'],
              'skip_connect': genotypes.count_ops(genotype, 'skip_connect', 'normal'),
              'genotype': genotypes.genotype_to_dict(genotype), 'op_names': arch.net.op_names,
              'arch_weights': arch_weights, **terms, 'terms': list(terms)}
    run.logger.info('genotype = %s', genotypes.genotype_repr(genotype))
    if terms:
        run.logger.info('method terms: %s', ', '.join(f'{k} {v:.4g}' for k, v in terms.items()))
    for cell, kinds in arch_weights.items():
        for kind, values in kinds.items():
            run.logger.info('%s %s (softmax): %s', cell, kind, utils.summarize_weights(values))
    if tables:
        looked_up = tables.lookup(genotype)
        fields.update(looked_up or {})
        run.logger.info('benchmark: %s', nas_bench_201.describe(looked_up))
    if run.distributed.is_main:
        genotypes.save_genotype(genotype, run.path('genotype.json'))
    return fields, f'valid_acc {valid["top1"]:.2f} skip_connect {fields["skip_connect"]}'


def log_stage(logger, stage, stages, model):
    """The line that opens each of P-DARTS's stages."""
    kept = int(model.op_mask(model.cell_types[0])[0].sum())
    logger.info('stage %d of %d: supernet of %d cells at partial channels K = %d and %.6f M parameters, %d '
                'candidate(s) per edge, skip dropout %.2f', stage.index + 1, len(stages), stage.layers,
                stage.partial_channels, utils.count_parameters_in_millions(model), kept, stage.skip_dropout)


def log_result(run, genotype):
    """The end of a search: the cell found, what the run folder holds, and how to retrain the cell."""
    run.logger.info('final genotype = %s', genotypes.genotype_repr(genotype))
    run.logger.info('wrote %s: genotype.json (the cell), metrics.jsonl (with the architecture weights of every '
                    'epoch), checkpoint.pt, args.json, log.txt; retrain the cell with: python train.py --arch_path %s',
                    run.exp_dir, run.path('genotype.json'))
