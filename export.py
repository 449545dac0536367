"""Taking an evaluation network out of PyTorch: ONNX, TorchScript and torch.export programs, each checked by
running it back (test.py --export), and loading one again to time it (bench.py --latency).

The format follows the file's ending. The exported network takes a batch of images of the size it was
exported at (any batch size) and returns the logits only: the auxiliary head and drop path are off, as in
evaluation. onnxruntime, which checks an ONNX file, is optional and imported only here.
"""
import inspect
import os
import re
import warnings
from typing import Callable, NamedTuple

import torch
import torch.nn as nn

from utils import UserError, optional_import

FORMATS = {'.onnx': 'ONNX', '.pt': 'TorchScript', '.pt2': 'torch.export'}
ONNX_OPSET = 17  # what onnxruntime releases of the last years all run
INPUT_SHAPE_FILE = 'input_shape'  # stored beside a TorchScript or torch.export program: C,H,W


def export_format(path):
    """The format of `path`, from its ending."""
    ending = os.path.splitext(path)[1].lower()
    if ending not in FORMATS:
        raise UserError(f'--export {path}: the file must end in .onnx (ONNX), .pt (TorchScript) or .pt2 '
                        f'(a torch.export program)')
    return FORMATS[ending]


class Logits(nn.Module):
    """An evaluation network that returns its logits alone (ours return (logits, auxiliary logits))."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, images):
        out = self.net(images)
        return out[0] if isinstance(out, tuple) else out


def unexportable_op(error):
    """The op an exporter's error names, else its first line."""
    match = re.search(r"operator '([^']+)'", str(error)) or re.search(r"(aten::\w+|aten\.\w+|prim::\w+)", str(error))
    return f'the network uses {match.group(1)}, which it cannot translate' if match else str(error).splitlines()[0]


def legacy_exporter():
    """The TorchScript-based ONNX exporter: the default before torch 2.9 (which has no `dynamo` flag before
    2.5), and needing no onnxscript after."""
    return {'dynamo': False} if 'dynamo' in inspect.signature(torch.onnx.export).parameters else {}


def export(net, path, example):
    """Write the evaluation network `net` (in evaluation mode, on the CPU) to `path` in the format its
    ending names, traced on the batch `example`, with the batch size left free."""
    fmt = export_format(path)
    net.drop_path_prob = 0.0
    module = Logits(net).eval()
    shape = ','.join(str(size) for size in example.shape[1:])
    try:
        # The trace fixes the image size (FactorizedReduce pads odd sizes), as an exported network is meant to.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            if fmt == 'ONNX':
                optional_import('onnx', 'exporting to ONNX', 'onnx')
                torch.onnx.export(module, (example,), path, opset_version=ONNX_OPSET, input_names=['images'],
                                  output_names=['logits'], **legacy_exporter(),
                                  dynamic_axes={'images': {0: 'batch'}, 'logits': {0: 'batch'}})
            elif fmt == 'TorchScript':
                torch.jit.save(torch.jit.trace(module, example), path, _extra_files={INPUT_SHAPE_FILE: shape})
            else:
                batch = torch.export.Dim('batch', max=65536)
                program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
                torch.export.save(program, path, extra_files={INPUT_SHAPE_FILE: shape})
    except Exception as error:  # every exporter raises its own kinds; the user needs the op
        if os.path.exists(path):
            os.remove(path)
        raise UserError(f'could not export to {fmt}: {unexportable_op(error)}') from None
    return fmt


class Loaded(NamedTuple):
    run: Callable  # images -> logits on the CPU
    input_shape: tuple  # (C, H, W)
    runtime: str  # what runs it, on which device or provider


def load(path, device):
    """An exported file, ready to run (a Loaded)."""
    fmt = export_format(path)
    if not os.path.isfile(path):
        raise UserError(f'{path} does not exist; write one with: python test.py --model_path WEIGHTS --export {path}')
    if fmt == 'ONNX':
        onnxruntime = optional_import('onnxruntime', 'running an ONNX file', 'onnxruntime')
        # Ask for CUDA only where this onnxruntime build has it (the plain onnxruntime wheel has the CPU alone).
        cuda = device.type == 'cuda' and 'CUDAExecutionProvider' in onnxruntime.get_available_providers()
        session = onnxruntime.InferenceSession(
            path, providers=['CUDAExecutionProvider'] * cuda + ['CPUExecutionProvider'])
        images = session.get_inputs()[0]
        return Loaded(lambda x: torch.from_numpy(session.run(None, {images.name: x.cpu().numpy()})[0]),
                      tuple(images.shape[1:]), f'onnxruntime {session.get_providers()[0]}')
    files = {INPUT_SHAPE_FILE: ''}
    if fmt == 'TorchScript':
        module = torch.jit.load(path, map_location=device, _extra_files=files)
    else:
        module = torch.export.load(path, extra_files=files).module().to(device)
    stored = files[INPUT_SHAPE_FILE]
    shape = tuple(int(size) for size in (stored.decode() if isinstance(stored, bytes) else stored).split(','))
    return Loaded(lambda x: module(x.to(device)).cpu(), shape, f'{fmt} on {device}')


def check(net, path, images):
    """The largest absolute difference between PyTorch's logits and the exported file's on `images`."""
    with torch.no_grad():
        expected = Logits(net).eval()(images)
        actual = load(path, torch.device('cpu')).run(images)
    if actual.shape != expected.shape:
        raise UserError(f'the exported network gives logits of shape {tuple(actual.shape)}, PyTorch '
                        f'{tuple(expected.shape)}')
    return (actual.float() - expected.float()).abs().max().item()
