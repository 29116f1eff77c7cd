"""Autograd for the fused BatchNorm(+ReLU, + residual add) family (schemas and contracts:
csrc/schemas/batch_norm.cpp).

_batch_norm_forward_train  training forward: statistics, running-statistics update and
                           normalize in one op; backward = _batch_norm_backward (one op: a
                           reduce pass over dy and x, then the elementwise pass: dx [, d residual])
batch_norm_apply           normalize with given statistics (inference); same backward in its
                           eval form (the statistics are constants)

The autograd of these two ops is C++ (csrc/cpu/batch_norm_autograd.cpp, which documents what is
saved for backward): a training step then pays no Python beyond the public function's argument
handling. Synchronized BatchNorm (fastconv/nn/batch_norm.py) composes _batch_norm_stats,
_batch_norm_update_stats, batch_norm_apply and the two-op backward (_batch_norm_backward_reduce,
_batch_norm_[add_relu_]backward_apply) around its collectives, inside its own autograd.Function.

Double backward is not supported: differentiating through the backward ops (or through
_batch_norm_stats, which only synchronized BatchNorm calls) raises a RuntimeError saying so.
"""
import torch


def count_per_channel(input):
    """Values per channel, numel / C (0 for an empty batch)."""
    channels = input.shape[1]
    return input.numel() // channels if channels else 0


def _no_double_backward(ctx, *grads):
    raise RuntimeError("fastconv::batch_norm: double backward (differentiating the gradient of "
                       "batch_norm) is not supported; use torch.nn.functional.batch_norm for "
                       "higher-order gradients")


for _name in ("_batch_norm_stats", "_batch_norm_backward", "_batch_norm_backward_reduce",
              "_batch_norm_backward_apply", "_batch_norm_add_relu_backward_apply"):
    torch.library.register_autograd(f"fastconv::{_name}", _no_double_backward)
