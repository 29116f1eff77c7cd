"""Autograd for the convolution family.

Three ops, each the others' derivatives, so every backward is built from fastconv ops and
double backward needs no extra kernels (conv_transpose2d is _conv2d_input_grad plus a bias):

conv2d(x, w, b)               dx = _conv2d_input_grad(dy, w)      dw = _conv2d_weight_grad(dy, x)
                              db = dy summed over batch and space
_conv2d_input_grad(dy, w)     d(dy) = conv2d(g, w)                dw = _conv2d_weight_grad(dy, g)
_conv2d_weight_grad(dy, x)    d(dy) = conv2d(x, g)                dx = _conv2d_input_grad(dy, g)

(g is the incoming gradient.) Only the gradients autograd asks for are computed, and each
setup_context saves only the tensors those gradients need.
"""
import torch

_ops = torch.ops.fastconv


def _needs(ctx, i):
    return ctx.needs_input_grad[i]


def _conv2d_setup_context(ctx, inputs, output):
    input, weight, bias, *geometry = inputs
    ctx.geometry = geometry  # stride, padding, dilation, groups
    ctx.input_size = list(input.shape)
    ctx.weight_size = list(weight.shape)
    ctx.save_for_backward(weight if _needs(ctx, 0) else None, input if _needs(ctx, 1) else None)
    # The format the forward ran in (PyTorch's rule, see checks/conv.h). Like torch's
    # convolution_backward, the backward brings grad to it, so grad_input comes out in the
    # input's format even when grad is, say, the expanded gradient of a sum.
    ctx.channels_last = output.dim() == 4 and output.is_contiguous(
        memory_format=torch.channels_last)
    # The weight gradient op returns the activations' format (channels_last when they are);
    # torch gives a weight's gradient the weight's format, and so does this backward (a
    # weight-sized copy where the two differ).
    ctx.weight_format = _weight_format(weight)


def _weight_format(weight):
    channels_last = (weight.is_contiguous(memory_format=torch.channels_last)
                     and not weight.is_contiguous())
    return torch.channels_last if channels_last else torch.contiguous_format


def _conv2d_backward(ctx, grad):
    weight, input = ctx.saved_tensors
    grad_input = grad_weight = grad_bias = None
    if ctx.channels_last:
        grad = grad.contiguous(memory_format=torch.channels_last)
    if _needs(ctx, 0):
        grad_input = _ops._conv2d_input_grad(grad, weight, ctx.input_size, *ctx.geometry)
    if _needs(ctx, 1):
        grad_weight = _ops._conv2d_weight_grad(grad, input, ctx.weight_size, *ctx.geometry)
        grad_weight = grad_weight.contiguous(memory_format=ctx.weight_format)
    if _needs(ctx, 2):
        grad_bias = grad.sum(dim=[0, 2, 3] if grad.dim() == 4 else [1, 2])
    return grad_input, grad_weight, grad_bias, None, None, None, None


torch.library.register_autograd("fastconv::conv2d", _conv2d_backward,
                                setup_context=_conv2d_setup_context)


def _input_grad_setup_context(ctx, inputs, output):
    grad_output, weight, input_size, *geometry = inputs
    ctx.geometry = geometry
    ctx.weight_size = list(weight.shape)
    ctx.weight_format = _weight_format(weight)
    ctx.save_for_backward(weight if _needs(ctx, 0) else None,
                          grad_output if _needs(ctx, 1) else None)


def _input_grad_backward(ctx, grad):
    weight, grad_output = ctx.saved_tensors
    grad_grad_output = grad_weight = None
    if _needs(ctx, 0):
        grad_grad_output = _ops.conv2d(grad, weight, None, *ctx.geometry)
    if _needs(ctx, 1):
        grad_weight = _ops._conv2d_weight_grad(grad_output, grad, ctx.weight_size, *ctx.geometry)
        grad_weight = grad_weight.contiguous(memory_format=ctx.weight_format)
    return grad_grad_output, grad_weight, None, None, None, None, None


torch.library.register_autograd("fastconv::_conv2d_input_grad", _input_grad_backward,
                                setup_context=_input_grad_setup_context)


def _weight_grad_setup_context(ctx, inputs, output):
    grad_output, input, weight_size, *geometry = inputs
    ctx.geometry = geometry
    ctx.input_size = list(input.shape)
    ctx.save_for_backward(input if _needs(ctx, 0) else None,
                          grad_output if _needs(ctx, 1) else None)


def _weight_grad_backward(ctx, grad):
    input, grad_output = ctx.saved_tensors
    grad_grad_output = grad_input = None
    if _needs(ctx, 0):
        grad_grad_output = _ops.conv2d(input, grad, None, *ctx.geometry)
    if _needs(ctx, 1):
        grad_input = _ops._conv2d_input_grad(grad_output, grad, ctx.input_size, *ctx.geometry)
    return grad_grad_output, grad_input, None, None, None, None, None


torch.library.register_autograd("fastconv::_conv2d_weight_grad", _weight_grad_backward,
                                setup_context=_weight_grad_setup_context)

