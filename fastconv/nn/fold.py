"""BatchNorm folded into the preceding convolution, in eval mode (fastconv.nn.convert's
fold_batchnorm=True).

In eval mode a BatchNorm with running statistics is an affine map per channel,
    bn(y) = y * s + (beta - mean * s),   s = gamma / sqrt(running_var + eps),
so conv(x, W, b) followed by it is one convolution with W' = W * s (per output channel) and
b' = (b - mean) * s + beta: the BatchNorm's pass over the activation disappears.

Folding here is a way of computing, not a change of state. The convolution and the BatchNorm
keep their parameters and buffers untouched (state_dict keys and values are the original
model's, so checkpoints save and load as before); a FoldedConv2d computes W' and b' from them
when its BatchNorm is in eval mode with running statistics, and that BatchNorm then only adds
the residual and applies the ReLU it was fused with (if any). In training mode, or after
model.train(), both compute exactly what they did unfolded. W' and b' are cached while no
gradient is recorded (inference) and recomputed when a parameter or running statistic
changes (tensor version counters); with autograd on they are recomputed each call, so
gradients reach W, b, gamma and beta as in the unfolded model.
"""
import torch

from fastconv.nn.batch_norm import BatchNorm2d, BatchNormReLU2d
from fastconv.nn.conv import Conv2d

__all__ = ["FoldedConv2d", "FoldedBatchNorm2d", "FoldedBatchNormReLU2d", "fold"]


class _Link:
    """The BatchNorm a FoldedConv2d folds, held outside nn.Module's registry (the BatchNorm
    is registered once, where the model has it: no duplicate state_dict entries)."""
    __slots__ = ("bn",)

    def __init__(self, bn):
        self.bn = bn


def folds(bn):
    """Whether bn is currently folded: eval mode with running statistics (what bn would use)."""
    return not bn.training and bn.running_mean is not None and bn.running_var is not None


def folded_weight_and_bias(weight, bias, bn):
    """(W * s, (b - mean) * s + beta) for the BatchNorm bn following a conv with weight, bias."""
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean if bias is None else bias - bn.running_mean
    shift = shift * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return weight * scale.reshape(-1, 1, 1, 1).to(weight.dtype), shift.to(weight.dtype)


class FoldedConv2d(Conv2d):
    """fastconv.nn.Conv2d that computes its BatchNorm folded in while that BN is in eval mode."""

    def _conv_forward(self, input, weight, bias):
        bn = self._fastconv_fold.bn
        if folds(bn):
            weight, bias = self._folded(weight, bias, bn)
        return super()._conv_forward(input, weight, bias)

    def _folded(self, weight, bias, bn):
        tensors = (weight, bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        if torch.compiler.is_compiling() or (
                torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                                for t in tensors)):
            return folded_weight_and_bias(weight, bias, bn)
        key = tuple((t.data_ptr(), t._version, t.dtype) if t is not None else None
                    for t in tensors) + (bn.eps,)
        cache = self.__dict__.get("_fastconv_fold_cache")
        if cache is None or cache[0] != key:
            with torch.no_grad():
                cache = (key, folded_weight_and_bias(weight, bias, bn))
            self.__dict__["_fastconv_fold_cache"] = cache
        return cache[1]

    def __getstate__(self):  # the cache is derived state: not pickled or deep-copied
        state = super().__getstate__().copy()
        state.pop("_fastconv_fold_cache", None)
        return state


def _folded_bn_forward(bn, input, residual):
    """What a folded BatchNorm leaves to do: the residual add and the ReLU. In place on input,
    the convolution's output, which only this BatchNorm uses (fold() checks that)."""
    if residual is not None:
        input = input.add_(residual)
    return input.relu_() if bn.activation == "relu" else input


class FoldedBatchNorm2d(BatchNorm2d):
    def forward(self, input, residual=None):
        if folds(self):
            self._check_input_dim(input)
            return _folded_bn_forward(self, input, residual)
        return super().forward(input, residual)


class FoldedBatchNormReLU2d(BatchNormReLU2d):
    def forward(self, input, residual=None):
        if folds(self):
            self._check_input_dim(input)
            return _folded_bn_forward(self, input, residual)
        return super().forward(input, residual)


_FOLDED = {BatchNorm2d: FoldedBatchNorm2d, BatchNormReLU2d: FoldedBatchNormReLU2d}


def can_fold(conv, bn):
    """A fastconv Conv2d and a fastconv BatchNorm2d / BatchNormReLU2d (exact types) that fit."""
    return (type(conv) is Conv2d and type(bn) in _FOLDED
            and conv.out_channels == bn.num_features and conv.weight.dim() == 4)


def fold(conv, bn):
    """Make conv compute bn folded in (in eval mode) and bn only its add / ReLU then."""
    conv.__class__ = FoldedConv2d
    conv._fastconv_fold = _Link(bn)
    bn.__class__ = _FOLDED[type(bn)]
