"""Autograd for the max-pool family.

max_pool2d_with_indices  backward: _max_pool2d_backward (a deterministic scatter/gather)
_max_pool2d_backward     backward: _max_unpool2d_backward (gather), so double backward works
max_unpool2d             backward: _max_unpool2d_backward (gather at the indices)
"""
import torch

_ops = torch.ops.fastconv


def _max_pool2d_setup_context(ctx, inputs, output):
    input, kernel_size, stride, padding, dilation, ceil_mode = inputs
    _, indices = output
    ctx.save_for_backward(indices)
    ctx.input_size = input.shape
    ctx.geometry = (kernel_size, stride, padding, dilation, ceil_mode)
    ctx.mark_non_differentiable(indices)


def _max_pool2d_backward(ctx, grad_output, _grad_indices):
    (indices,) = ctx.saved_tensors
    grad_input = None
    if ctx.needs_input_grad[0]:
        grad_input = _ops._max_pool2d_backward(grad_output, indices, ctx.input_size, *ctx.geometry)
    return grad_input, None, None, None, None, None


torch.library.register_autograd(
    "fastconv::max_pool2d_with_indices", _max_pool2d_backward,
    setup_context=_max_pool2d_setup_context)


def _pool_backward_setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _pool_backward_backward(ctx, grad_grad_input):
    # _max_pool2d_backward is linear in grad_output: d(grad_input)/d(grad_output) applied to
    # grad_grad_input picks grad_grad_input at each output's argmax, a gather.
    (indices,) = ctx.saved_tensors
    grad_grad_output = None
    if ctx.needs_input_grad[0]:
        grad_grad_output = _ops._max_unpool2d_backward(grad_grad_input, indices)
    return grad_grad_output, None, None, None, None, None, None, None


torch.library.register_autograd(
    "fastconv::_max_pool2d_backward", _pool_backward_backward,
    setup_context=_pool_backward_setup_context)


def _unpool_setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _unpool_backward(ctx, grad_output):
    (indices,) = ctx.saved_tensors
    grad_input = None
    if ctx.needs_input_grad[0]:
        grad_input = _ops._max_unpool2d_backward(grad_output, indices)
    return grad_input, None, None


torch.library.register_autograd(
    "fastconv::max_unpool2d", _unpool_backward, setup_context=_unpool_setup_context)
