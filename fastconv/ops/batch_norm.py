"""Autograd for the fused BatchNorm(+ReLU, + residual add) family (schemas and contracts:
csrc/schemas/batch_norm.cpp).

_batch_norm_forward_train  training forward: statistics + normalize in one op; backward =
                           _batch_norm_backward_reduce (one pass over dy and x) +
                           _batch_norm_[add_relu_]backward_apply (one pass: dx [, d residual])
batch_norm_apply           normalize with given statistics (inference); same backward ops in
                           their eval form (the statistics are constants)

What is saved for backward: the input x (one activation-sized tensor), the per-channel mean
and var, and the residual when there is one (ResNet's identity branch, which the block's first
convolution keeps alive anyway). The ReLU mask is recomputed from x by the same expression the
forward used (common/batch_norm.h), rather than read from the saved output y: x_hat cannot be
recovered from y where weight == 0 (grad_weight needs it) and loses precision where weight is
small, while x gives exact x_hat, the same minimal traffic (backward reads dy and x twice,
writes dx once: 5 passes) and no second saved tensor.

Double backward is not supported: differentiating through the backward ops (or through
_batch_norm_stats, which only synchronized BatchNorm calls, inside its own autograd.Function)
raises a RuntimeError saying so.
"""
import torch

_ops = torch.ops.fastconv


def count_per_channel(input):
    """Values per channel, numel / C (0 for an empty batch)."""
    channels = input.shape[1]
    return input.numel() // channels if channels else 0


def _backward(ctx, grad_output, input, mean, var, weight, bias, residual, training):
    """Gradients (input, weight, bias, residual) of [relu](bn(input) [+ residual])."""
    need_x, need_w, need_b, need_r = ctx.bn_needs
    grad_input = grad_weight = grad_bias = grad_residual = None
    if grad_output is None:
        return grad_input, grad_weight, grad_bias, grad_residual
    eps, relu = ctx.eps, ctx.relu
    sum_dy = sum_dy_xmu = None
    if need_w or need_b or (need_x and training):
        sum_dy, sum_dy_xmu, grad_w = _ops._batch_norm_backward_reduce(
            grad_output, input, mean, var, weight, bias, residual, eps, relu)
        if need_w:
            grad_weight = grad_w
        if need_b:
            grad_bias = sum_dy.to(bias.dtype)
    sums = (sum_dy, sum_dy_xmu) if training else (None, None)
    if need_r and relu:  # residual gradient = the masked grad_output, from the same pass
        grad_input, grad_residual = _ops._batch_norm_add_relu_backward_apply(
            grad_output, input, mean, var, weight, bias, residual, *sums, ctx.count, eps)
        if not need_x:
            grad_input = None
    else:
        if need_r:
            grad_residual = grad_output  # no ReLU: d(bn + residual)/d residual = identity
        if need_x:
            grad_input = _ops._batch_norm_backward_apply(
                grad_output, input, mean, var, weight, bias, residual, *sums, ctx.count, eps,
                relu)
    return grad_input, grad_weight, grad_bias, grad_residual


# ---- _batch_norm_forward_train(input, weight, bias, residual, eps, relu) -> (y, mean, var) ----
def _train_setup_context(ctx, inputs, output):
    input, weight, bias, residual, eps, relu = inputs
    _, mean, var = output
    ctx.save_for_backward(input, mean, var, weight, bias, residual)
    ctx.eps, ctx.relu, ctx.count = eps, relu, count_per_channel(input)
    ctx.bn_needs = ctx.needs_input_grad[:4]
    ctx.mark_non_differentiable(mean, var)
    ctx.set_materialize_grads(False)


def _train_backward(ctx, grad_output, _grad_mean, _grad_var):
    input, mean, var, weight, bias, residual = ctx.saved_tensors
    grads = _backward(ctx, grad_output, input, mean, var, weight, bias, residual, training=True)
    return (*grads, None, None)


torch.library.register_autograd("fastconv::_batch_norm_forward_train", _train_backward,
                                setup_context=_train_setup_context)


# ---- batch_norm_apply(input, mean, var, weight, bias, residual, eps, relu) -> y ---------------
def _apply_setup_context(ctx, inputs, output):
    input, mean, var, weight, bias, residual, eps, relu = inputs
    ctx.save_for_backward(input, mean, var, weight, bias, residual)
    ctx.eps, ctx.relu, ctx.count = eps, relu, count_per_channel(input)
    needs = ctx.needs_input_grad
    ctx.bn_needs = (needs[0], needs[3], needs[4], needs[5])
    ctx.stats_need_grad = needs[1] or needs[2]


def _apply_backward(ctx, grad_output):
    if ctx.stats_need_grad:
        raise RuntimeError("fastconv::batch_norm_apply: expected mean and var that do not "
                           "require grad (statistics are constants in eval mode), got a "
                           "mean or var that requires grad")
    input, mean, var, weight, bias, residual = ctx.saved_tensors
    gx, gw, gb, gr = _backward(ctx, grad_output, input, mean, var, weight, bias, residual,
                               training=False)
    return gx, None, None, gw, gb, gr, None, None


torch.library.register_autograd("fastconv::batch_norm_apply", _apply_backward,
                                setup_context=_apply_setup_context)


def _no_double_backward(ctx, *grads):
    raise RuntimeError("fastconv::batch_norm: double backward (differentiating the gradient of "
                       "batch_norm) is not supported; use torch.nn.functional.batch_norm for "
                       "higher-order gradients")


for _name in ("_batch_norm_stats", "_batch_norm_backward_reduce", "_batch_norm_backward_apply",
              "_batch_norm_add_relu_backward_apply"):
    torch.library.register_autograd(f"fastconv::{_name}", _no_double_backward)
