"""TensorBoard event files of a run (--tensorboard): every scalar of metrics.jsonl, a search's architecture
weights as images and histograms, and the derived cell's drawing when Graphviz can draw it.

TensorBoard is optional: it is imported only with the flag, and a missing one is one sentence."""
import io
import json
import logging
import os

import numpy as np
import torch

import genotypes
from utils import UserError, optional_import

FOLDER = 'tensorboard'  # inside the run folder: tensorboard --logdir EXP/tensorboard


def summary_writer_class():
    """torch's SummaryWriter, or one sentence that says how to install TensorBoard."""
    optional_import('tensorboard', '--tensorboard', 'tensorboard')
    return optional_import('torch.utils.tensorboard', '--tensorboard', 'tensorboard').SummaryWriter


class TensorBoardLog:
    """Writes each metrics row as the run appends it, at the row's epoch. The writer opens at the first row,
    which in a resumed run is the first epoch done again, so events written after it before the
    interruption are dropped, as metrics.jsonl drops its rows."""

    def __init__(self, exp_dir):
        self.folder = os.path.join(exp_dir, FOLDER)
        self.writer_class = summary_writer_class()
        self.writer, self.draws_cells = None, True

    def write(self, row):
        epoch = row['epoch']
        if self.writer is None:
            self.writer = self.writer_class(self.folder, purge_step=epoch)
        for name, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and name != 'epoch':
                self.writer.add_scalar(name, value, epoch)
        for cell, fields in row.get('arch_weights', {}).items():
            for field, values in fields.items():
                weights = torch.tensor(values, dtype=torch.float32)
                self.writer.add_histogram(f'arch_weights/{cell}_{field}', weights, epoch)
                if weights.dim() == 2:  # edges x candidates, white where the weight is 1
                    self.writer.add_image(f'arch_weights/{cell}_{field}', weights.clamp(0, 1), epoch,
                                          dataformats='HW')
        if 'genotype' in row and self.draws_cells:
            self._draw_cells(row['genotype'], epoch)
        self.writer.flush()

    def _draw_cells(self, genotype, epoch):
        import drawing  # Graphviz and Pillow, only when there is a cell to draw
        try:
            with drawing.graphviz_dot('the cells are left out of TensorBoard'):
                graphs = drawing.cell_graphs(genotypes.parse_genotype(json.dumps(genotype)), title=f'epoch {epoch}')
                pictures = {graph.name: graph.pipe(format='png') for graph in graphs}
            image_module = drawing.require('PIL.Image')
        except UserError as error:
            logging.getLogger('darts').info('%s', error)
            self.draws_cells = False
            return
        for name, png in pictures.items():
            picture = np.asarray(image_module.open(io.BytesIO(png)).convert('RGB'))
            self.writer.add_image(f'cell/{name}', picture, epoch, dataformats='HWC')
