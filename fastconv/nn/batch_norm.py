"""Fused BatchNorm(+ReLU, + residual add) modules: drop-ins for torch.nn.BatchNorm2d and
torch.nn.SyncBatchNorm (subclasses, so constructor arguments, buffers, `state_dict` keys and
`repr` are torch's and torch checkpoints load unchanged), running fastconv's kernels.

Synchronized BatchNorm gathers every process's (count, mean, var) with one all_gather and
merges them exactly (Chan's parallel formula: the statistics of the concatenated global batch,
also for different batch sizes per process); its backward all-reduces the two per-channel sums
with one all_reduce. Like torch's, it synchronizes only in training with an initialized process
group of more than one process, and otherwise is the local BatchNorm; unlike torch's it also
runs on CPU tensors (gloo).
"""
import torch
import torch.distributed as dist

from fastconv.nn import functional as F
from fastconv.ops.batch_norm import count_per_channel

_ops = torch.ops.fastconv


def _factor_and_buffers(module):
    """torch's _BatchNorm.forward bookkeeping: (use batch statistics, momentum factor,
    running_mean, running_var), counting num_batches_tracked in training."""
    factor = 0.0 if module.momentum is None else module.momentum
    if module.training and module.track_running_stats and module.num_batches_tracked is not None:
        module.num_batches_tracked.add_(1)
        if module.momentum is None:  # cumulative moving average
            factor = 1.0 / float(module.num_batches_tracked)
    bn_training = module.training or (module.running_mean is None and module.running_var is None)
    keep = not module.training or module.track_running_stats
    return (bn_training, factor, module.running_mean if keep else None,
            module.running_var if keep else None)


def _check_activation(activation):
    if activation not in (None, "relu"):
        raise ValueError(f"fastconv::batch_norm: expected activation None or 'relu', got "
                         f"{activation!r}")
    return activation


class BatchNorm2d(torch.nn.BatchNorm2d):
    """torch.nn.BatchNorm2d; subclasses set `activation` to fuse a ReLU."""
    activation = None

    def forward(self, input, residual=None):
        self._check_input_dim(input)
        bn_training, factor, running_mean, running_var = _factor_and_buffers(self)
        return F._batch_norm(input, residual, running_mean, running_var, self.weight, self.bias,
                             bn_training, factor, self.eps, self.activation == "relu")


class BatchNormReLU2d(BatchNorm2d):
    """relu(BatchNorm2d(input) + residual), residual optional: forward(input, residual=None)."""
    activation = "relu"

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device,
                         dtype=dtype)

    def extra_repr(self):
        return super().extra_repr() + ", activation=relu"


def _merge_gathered(gathered, channels):
    """(count, mean, var) rows of every process -> global (count, mean, var), exactly:
    mean = sum(n_i mean_i) / n, M2 = sum(n_i var_i) + sum(n_i (mean_i - mean)^2), in float64."""
    g = gathered.double()
    counts, means, vars_ = g[:, :1], g[:, 1:1 + channels], g[:, 1 + channels:]
    total = counts.sum()
    mean = (counts * means).sum(0) / total.clamp_min(1)
    m2 = (counts * vars_).sum(0) + (counts * (means - mean) ** 2).sum(0)
    return total, mean, m2 / total.clamp_min(1)


class _SyncBatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, weight, bias, residual, running_mean, running_var, eps, momentum,
                relu, process_group, world_size):
        channels = input.shape[1]
        mean, var = _ops._batch_norm_stats(input)
        # float64: counts stay exact and the merge loses nothing to the transport
        local = torch.cat([mean.new_full((1,), count_per_channel(input)), mean, var]).double()
        gathered = local.new_empty(world_size * local.numel())
        dist.all_gather_into_tensor(gathered, local, group=process_group)
        total, mean64, var64 = _merge_gathered(gathered.view(world_size, -1), channels)
        count = int(total.item())
        if count == 1:
            raise ValueError(f"fastconv::batch_norm: expected more than 1 value per channel "
                             f"when training, got input of shape {list(input.shape)} (1 value "
                             f"per channel over all processes)")
        mean, var = mean64.to(mean.dtype), var64.to(var.dtype)
        if running_mean is not None and count > 0:
            _ops._batch_norm_update_stats(mean, var, count, momentum, running_mean, running_var)
        output = _ops.batch_norm_apply(input, mean, var, weight, bias, residual, eps, relu)
        ctx.save_for_backward(input, mean, var, weight, bias, residual)
        ctx.eps, ctx.relu, ctx.count = eps, relu, count
        ctx.process_group = process_group
        return output

    @staticmethod
    def backward(ctx, grad_output):
        input, mean, var, weight, bias, residual = ctx.saved_tensors
        need_x, need_w, need_b, need_r = ctx.needs_input_grad[:4]
        sum_dy, sum_dy_xmu, grad_w = _ops._batch_norm_backward_reduce(
            grad_output, input, mean, var, weight, bias, residual, ctx.eps, ctx.relu)
        # weight and bias gradients stay local, as in torch's SyncBatchNorm (DDP reduces them)
        grad_weight = grad_w if need_w else None
        grad_bias = sum_dy.to(bias.dtype) if need_b else None
        grad_input = grad_residual = None
        if need_x or need_r:
            sums = torch.cat([sum_dy, sum_dy_xmu])
            dist.all_reduce(sums, group=ctx.process_group)
            sum_dy, sum_dy_xmu = sums.chunk(2)
            args = (grad_output, input, mean, var, weight, bias)
            if ctx.relu and residual is not None:
                grad_input, grad_residual = _ops._batch_norm_add_relu_backward_apply(
                    *args, residual, sum_dy, sum_dy_xmu, ctx.count, ctx.eps)
            else:
                grad_input = _ops._batch_norm_backward_apply(
                    *args, residual, sum_dy, sum_dy_xmu, ctx.count, ctx.eps, ctx.relu)
                grad_residual = grad_output if need_r else None
        return (grad_input if need_x else None, grad_weight, grad_bias,
                grad_residual if need_r else None, None, None, None, None, None, None, None)


class SyncBatchNorm(torch.nn.SyncBatchNorm):
    """torch.nn.SyncBatchNorm with `activation` (None or "relu") fused, and
    forward(input, residual=None) computing [relu](bn(input) [+ residual])."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, process_group=None, device=None, dtype=None, *,
                 activation=None, **kwargs):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, process_group,
                         device=device, dtype=dtype, **kwargs)
        self.activation = _check_activation(activation)

    def extra_repr(self):
        text = super().extra_repr()
        return text + (f", activation={self.activation}" if self.activation else "")

    def forward(self, input, residual=None):
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
        bn_training, factor, running_mean, running_var = _factor_and_buffers(self)
        relu = self.activation == "relu"
        group = self.process_group or (dist.group.WORLD if dist.is_available() else None)
        need_sync = (bn_training and self.training and dist.is_available()
                     and dist.is_initialized() and dist.get_world_size(group) > 1)
        if not need_sync:
            return F._batch_norm(input, residual, running_mean, running_var, self.weight,
                                 self.bias, bn_training, factor, self.eps, relu)
        return _SyncBatchNormFunction.apply(
            input, self.weight, self.bias, residual, running_mean, running_var, self.eps, factor,
            relu, group, dist.get_world_size(group))

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """torch's convert_sync_batchnorm, producing fastconv SyncBatchNorm layers (with
        activation="relu" for BatchNormReLU2d); parameters and buffers are carried over."""
        output = module
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(
                module, torch.nn.SyncBatchNorm):
            output = cls(module.num_features, module.eps, module.momentum, module.affine,
                         module.track_running_stats, process_group,
                         activation=getattr(module, "activation", None))
            if module.affine:
                with torch.no_grad():
                    output.weight = module.weight
                    output.bias = module.bias
            output.running_mean = module.running_mean
            output.running_var = module.running_var
            output.num_batches_tracked = module.num_batches_tracked
            output.training = module.training
            if hasattr(module, "qconfig"):
                output.qconfig = module.qconfig
        for name, child in module.named_children():
            output.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        del module
        return output


__all__ = ["BatchNorm2d", "BatchNormReLU2d", "SyncBatchNorm"]
