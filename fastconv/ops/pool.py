"""Autograd for the max-pool family.

max_pool2d_with_indices  backward: _max_pool2d_backward (a deterministic scatter/gather)
_max_pool2d_backward     backward: _max_unpool2d_backward (gather), so double backward works
max_unpool2d             backward: _max_unpool2d_backward (gather at the indices)
_max_unpool2d_backward   backward: scatter-add (so max_unpool2d has double backward too)
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
    # Otherwise autograd would allocate and zero-fill an int64 "gradient" for the indices on
    # every backward: as much memory traffic as the backward kernel itself.
    ctx.set_materialize_grads(False)


def _max_pool2d_backward(ctx, grad_output, _grad_indices):
    (indices,) = ctx.saved_tensors
    grad_input = None
    if ctx.needs_input_grad[0] and grad_output is not None:
        grad_input = _ops._max_pool2d_backward(grad_output, indices, ctx.input_size, *ctx.geometry)
    return grad_input, None, None, None, None, None


torch.library.register_autograd(
    "fastconv::max_pool2d_with_indices", _max_pool2d_backward,
    setup_context=_max_pool2d_setup_context)


def _save_indices(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _gather_at_indices(ctx, grad):
    # The backward of the two ops linear in their first argument whose derivative gathers it at
    # the indices (their second argument), _max_unpool2d_backward:
    # - _max_pool2d_backward: d(grad_input)/d(grad_output) applied to grad_grad_input picks
    #   grad_grad_input at each output's argmax;
    # - max_unpool2d: the gradient of each input is grad_output at its index.
    (indices,) = ctx.saved_tensors
    grad_first = None
    if ctx.needs_input_grad[0]:
        grad_first = _ops._max_unpool2d_backward(grad, indices)
    return (grad_first,) + (None,) * (len(ctx.needs_input_grad) - 1)


torch.library.register_autograd(
    "fastconv::_max_pool2d_backward", _gather_at_indices, setup_context=_save_indices)
torch.library.register_autograd(
    "fastconv::max_unpool2d", _gather_at_indices, setup_context=_save_indices)


def _gather_setup_context(ctx, inputs, output):
    grad_output, indices = inputs
    ctx.save_for_backward(indices)
    ctx.grad_output_shape = grad_output.shape


def _gather_backward(ctx, grad):
    # The derivative of a gather is a scatter-add. This is only reached by double backward of
    # max_unpool2d (or triple backward of max-pool), so it uses PyTorch's scatter_add rather
    # than a kernel of its own; on CUDA that is deterministic only under
    # torch.use_deterministic_algorithms(True).
    (indices,) = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return None, None
    shape = ctx.grad_output_shape
    planes = grad.reshape(*shape[:-2], -1)
    out = grad.new_zeros(*shape[:-2], shape[-2] * shape[-1])
    out.scatter_add_(-1, indices.reshape(planes.shape), planes)
    return out.reshape(shape), None


torch.library.register_autograd(
    "fastconv::_max_unpool2d_backward", _gather_backward, setup_context=_gather_setup_context)
