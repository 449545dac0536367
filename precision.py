"""Mixed precision and memory format, as timm does it: the speed flags, an autocast factory, an optional
gradient scaler, TF32 off where a computation must be exact, and NHWC on CUDA."""
import contextlib
import functools

import torch


def add_speed_arguments(parser, compile_option=False):
    speed = parser.add_argument_group('speed')
    speed.add_argument('--amp', choices=['auto', 'bf16', 'fp16', 'off'], default='auto',
                       help='mixed precision; auto: bf16 on CUDA devices that support it, off elsewhere. '
                            'Architecture weights, their softmax, losses and BatchNorm statistics stay float32')
    speed.add_argument('--channels_last', dest='channels_last', action='store_const', const=True, default=None,
                       help='NHWC memory format (default: on with CUDA)')
    speed.add_argument('--no_channels_last', dest='channels_last', action='store_const', const=False,
                       help='keep the NCHW memory format')
    speed.add_argument('--deterministic', action='store_true',
                       help='deterministic algorithms (cuDNN and PyTorch), no cuDNN autotuning: a run repeats exactly '
                            'on a GPU too, more slowly')
    if compile_option:
        speed.add_argument('--compile', action='store_true', help='torch.compile the network (slow first steps)')
    return speed


def amp_dtype(amp, device):
    """The autocast dtype of --amp, None for float32; `auto` is bf16 on CUDA devices that have it."""
    if amp == 'auto':
        amp = 'bf16' if device.type == 'cuda' and torch.cuda.is_bf16_supported() else 'off'
    return {'bf16': torch.bfloat16, 'fp16': torch.float16, 'off': None}[amp]


def autocast_factory(dtype, device):
    """timm's `amp_autocast`: calling it gives the autocast context of `dtype` (nothing for float32)."""
    return contextlib.nullcontext if dtype is None else functools.partial(torch.autocast, device.type, dtype=dtype)


def grad_scaler(dtype, device):
    """fp16 needs its gradients scaled; bf16 and float32 do not (None)."""
    return torch.amp.GradScaler(device.type) if dtype == torch.float16 else None


@contextlib.contextmanager
def exact_float32():
    """Float32 matrix products and convolutions without TF32 inside (CUDA's settings; the CPU has no TF32)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def use_channels_last(flag, device):
    """--channels_last / --no_channels_last, or by default NHWC on CUDA only."""
    return device.type == 'cuda' if flag is None else flag


def memory_format(channels_last):
    return torch.channels_last if channels_last else torch.contiguous_format
