"""Drop-in mirror of `torch.nn.functional` for the ops fastconv implements.

Each function normalizes its arguments exactly as torch.nn.functional does (ints or pairs,
stride defaulting to the kernel) and calls the `torch.ops.fastconv` operator, which checks
everything else (checks.h) identically in eager mode and under torch.compile.
"""
from collections.abc import Sequence

import torch

_ops = torch.ops.fastconv


def _pair(value, op, name):
    """An int or a sequence of 1 or 2 ints -> a list of two ints, as torch's pooling accepts."""
    # the common cases first: an ABC isinstance check costs about a microsecond per call
    if type(value) is int:
        return [value, value]
    if type(value) in (list, tuple) and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
        return list(value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        values = list(value)
        if len(values) == 1:
            values = values * 2
    else:
        values = [value, value]
    if len(values) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise RuntimeError(f"fastconv::{op}: expected {name} to be an int or a pair of ints, "
                           f"got {value!r}")
    return values


def _pool_args(op, kernel_size, stride, padding, dilation):
    kernel = _pair(kernel_size, op, "kernel_size")
    if stride is None or (isinstance(stride, Sequence) and len(stride) == 0):
        stride = kernel
    return kernel, _pair(stride, op, "stride"), _pair(padding, op, "padding"), \
        _pair(dilation, op, "dilation")


def max_pool2d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1,
                            ceil_mode=False, return_indices=True):
    """2-D max pooling returning (values, int64 indices), as `F.max_pool2d_with_indices`.

    Indices are flat `h * W + w` positions within each (n, c) plane, interchangeable with
    PyTorch's (F.max_unpool2d accepts them and vice versa).
    """
    kernel, stride, padding, dilation = _pool_args(
        "max_pool2d_with_indices", kernel_size, stride, padding, dilation)
    return _ops.max_pool2d_with_indices(input, kernel, stride, padding, dilation, bool(ceil_mode))


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling, as `F.max_pool2d`; with return_indices=True also the indices."""
    output, indices = max_pool2d_with_indices(input, kernel_size, stride, padding, dilation,
                                              ceil_mode)
    return (output, indices) if return_indices else output


def _unpool_output_size(input, kernel, stride, padding, output_size):
    """PyTorch's rule (torch.nn.functional._unpool_output_size), same bounds and errors."""
    default = [(input.shape[-2 + d] - 1) * stride[d] + kernel[d] - 2 * padding[d] for d in range(2)]
    if output_size is None:
        return default
    size = list(output_size)
    if len(size) == 4:
        size = size[2:]
    if len(size) != 2:
        raise ValueError("fastconv::max_unpool2d: expected output_size with 2 or 4 elements, "
                         f"got {len(size)}")
    for d in range(2):
        low, high = default[d] - stride[d], default[d] + stride[d]
        if not low < size[d] < high:
            raise ValueError(f"fastconv::max_unpool2d: expected output_size[{d}] between {low} "
                             f"and {high} (exclusive), got {size[d]}")
    return size


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Partial inverse of max_pool2d, as `F.max_unpool2d`: zeros except at the indices."""
    kernel, stride, padding, _ = _pool_args("max_unpool2d", kernel_size, stride, padding, 1)
    size = _unpool_output_size(input, kernel, stride, padding, output_size)
    return _ops.max_unpool2d(input, indices, size)


__all__ = ["max_pool2d", "max_pool2d_with_indices", "max_unpool2d"]


# ---- convolution (csrc/cpu/conv2d_autograd.cpp has the autograd) ------------------------------

def _conv_same_padding(input, weight, dilation):
    """torch's padding='same': total padding dilation * (kernel - 1) per dimension; an odd
    total puts the extra row/column at the end, applied here as an explicit zero pad so the
    op itself only sees symmetric padding (as ATen's _convolution_same does)."""
    padding, extra = [], [0, 0, 0, 0]  # F.pad order: (left, right, top, bottom)
    for d in range(2):
        total = dilation[d] * (weight.shape[2 + d] - 1)
        padding.append(total // 2)
        extra[2 * (1 - d) + 1] = total - 2 * (total // 2)
    if any(extra):
        input = torch.nn.functional.pad(input, extra)
    return input, padding


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution, as `F.conv2d`: 4-D (N, C, H, W) or unbatched 3-D input, weight
    (K, C / groups, R, S), padding an int, a pair, 'same' or 'valid'. The output keeps the
    input's memory format (channels_last when the input or the weight is)."""
    stride = _pair(stride, "conv2d", "stride")
    dilation = _pair(dilation, "conv2d", "dilation")
    if isinstance(padding, str):
        if padding == "valid":
            padding = [0, 0]
        elif padding == "same":
            if stride != [1, 1]:
                raise RuntimeError("fastconv::conv2d: expected stride 1 with padding='same' "
                                   f"(as torch, strided 'same' is not supported), got {stride}")
            if weight.dim() != 4:
                raise RuntimeError("fastconv::conv2d: expected a 4-D weight (K, C / groups, R, "
                                   f"S), got {weight.dim()}-D weight of shape {list(weight.shape)}")
            input, padding = _conv_same_padding(input, weight, dilation)
        else:
            raise RuntimeError("fastconv::conv2d: expected padding to be an int, a pair of ints, "
                               f"'same' or 'valid', got {padding!r}")
    else:
        padding = _pair(padding, "conv2d", "padding")
    return _ops.conv2d(input, weight, bias, stride, padding, dilation, int(groups))


def _conv_transpose_output_size(op, input, weight, stride, padding, output_padding, dilation):
    """The spatial output size of conv_transpose2d (torch's formula), after torch's checks."""
    if input.dim() not in (3, 4):
        raise RuntimeError(f"fastconv::{op}: expected a 3-D (C, H, W) or 4-D (N, C, H, W) "
                           f"input, got {input.dim()}-D input of shape {list(input.shape)}")
    if weight.dim() != 4:
        raise RuntimeError(f"fastconv::{op}: expected a 4-D weight (C_in, C_out / groups, R, S), "
                           f"got {weight.dim()}-D weight of shape {list(weight.shape)}")
    for d in range(2):
        if output_padding[d] < 0 or not (output_padding[d] < stride[d]
                                         or output_padding[d] < dilation[d]):
            raise RuntimeError(f"fastconv::{op}: expected output_padding >= 0 and smaller than "
                               f"stride or dilation, got output_padding={output_padding}, "
                               f"stride={stride}, dilation={dilation}")
    if input.shape[-3] != weight.shape[0]:
        raise RuntimeError(f"fastconv::{op}: expected input with weight.size(0) = "
                           f"{weight.shape[0]} channels, got input of shape {list(input.shape)}")
    size = [(input.shape[-2 + d] - 1) * stride[d] - 2 * padding[d]
            + dilation[d] * (weight.shape[2 + d] - 1) + output_padding[d] + 1 for d in range(2)]
    if size[0] < 1 or size[1] < 1:
        raise RuntimeError(f"fastconv::{op}: expected an output of at least 1x1, got "
                           f"{size[0]}x{size[1]} from input {list(input.shape)}, weight "
                           f"{list(weight.shape)}, stride={stride}, padding={padding}, "
                           f"output_padding={output_padding}, dilation={dilation}")
    return size


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """2-D transposed convolution, as `F.conv_transpose2d`: weight (C_in, C_out / groups, R, S),
    output size (H - 1) * stride - 2 * padding + dilation * (R - 1) + output_padding + 1. It is
    the input gradient of the convolution that maps its output back to its input."""
    op = "conv_transpose2d"
    stride, padding = _pair(stride, op, "stride"), _pair(padding, op, "padding")
    dilation = _pair(dilation, op, "dilation")
    output_padding = _pair(output_padding, op, "output_padding")
    size = _conv_transpose_output_size(op, input, weight, stride, padding, output_padding,
                                       dilation)
    groups = int(groups)
    out_channels = weight.shape[1] * groups
    if bias is not None:
        if bias.dim() != 1 or bias.shape[0] != out_channels:
            raise RuntimeError(f"fastconv::{op}: expected a 1-D bias of {out_channels} elements "
                               f"(one per output channel), got bias of shape {list(bias.shape)}")
        autocast = torch.is_autocast_enabled(input.device.type)
        if bias.dtype != input.dtype and not autocast:
            raise RuntimeError(f"fastconv::{op}: expected bias of the input's dtype "
                               f"{input.dtype}, got {bias.dtype}")
    # The op is the input gradient of the convolution of an output-sized image, whose output
    # has (size + 2 * padding - dilation * (R - 1) - 1) // stride + 1 = H + output_padding //
    # stride rows. An output_padding >= stride (allowed when smaller than the dilation) thus
    # asks for rows of grad_output past the input's: they are zeros. (They are not output rows
    # that no input reaches: the padding crops the far end of the full result, and the
    # output_padding rows bring part of it back, e.g. stride 1, dilation 2, padding 1.)
    rows_past = [output_padding[d] // stride[d] if stride[d] > 0 else 0 for d in range(2)]
    if any(rows_past):  # (pad keeps a channels_last input channels_last)
        input = torch.nn.functional.pad(input, (0, rows_past[1], 0, rows_past[0]))
    input_size = ([input.shape[0]] if input.dim() == 4 else []) + [out_channels] + size
    out = _ops._conv2d_input_grad(input, weight, input_size, stride, padding, dilation, groups)
    # (under autocast the op ran in the autocast dtype; the bias follows, as in torch)
    return out if bias is None else out + bias.to(out.dtype).view(-1, 1, 1)


__all__ += ["conv2d", "conv_transpose2d"]


# ---- Fused BatchNorm + ReLU (fastconv/ops/batch_norm.py, csrc/schemas/batch_norm.cpp) -------
def _batch_norm(input, residual, running_mean, running_var, weight, bias, training, momentum,
                eps, relu):
    """[relu](batch_norm(input) [+ residual]) with torch.nn.functional.batch_norm's rules."""
    if momentum is None or isinstance(momentum, bool):
        raise TypeError(f"fastconv::batch_norm: expected momentum to be a float, got "
                        f"{momentum!r} (modules turn momentum=None into a cumulative average)")
    if (running_mean is None) != (running_var is None):
        raise RuntimeError("fastconv::batch_norm: expected running_mean and running_var both "
                           "given or both None, got only one")
    if not training:
        if running_mean is None:
            raise RuntimeError("fastconv::batch_norm: expected running_mean and running_var in "
                               "evaluation mode (training=False), got None")
        return _ops.batch_norm_apply(input, running_mean, running_var, weight, bias, residual,
                                     eps, relu)
    return _ops._batch_norm_forward_train(input, weight, bias, residual, running_mean,
                                          running_var, float(momentum), eps, relu)[0]


def _activation_is_relu(activation):
    if activation is None:
        return False
    if activation == "relu":
        return True
    raise ValueError(f"fastconv::batch_norm: expected activation None or 'relu', got "
                     f"{activation!r}")


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5, activation=None):
    """`torch.nn.functional.batch_norm` (same arguments, statistics and running-buffer updates),
    followed by `activation` (None or "relu") fused into the same pass."""
    return _batch_norm(input, None, running_mean, running_var, weight, bias, training, momentum,
                       eps, _activation_is_relu(activation))


def batch_norm_relu(input, running_mean, running_var, weight=None, bias=None, training=False,
                    momentum=0.1, eps=1e-5):
    """relu(batch_norm(input, ...)) in one fused pass."""
    return _batch_norm(input, None, running_mean, running_var, weight, bias, training, momentum,
                       eps, True)


def batch_norm_add_relu(input, residual, running_mean, running_var, weight=None, bias=None,
                        training=False, momentum=0.1, eps=1e-5):
    """relu(batch_norm(input, ...) + residual), the end of a ResNet block, in one fused pass."""
    return _batch_norm(input, residual, running_mean, running_var, weight, bias, training,
                       momentum, eps, True)
