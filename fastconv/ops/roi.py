"""ROI Align and ROI Pool: drop-ins for torchvision.ops.roi_align / roi_pool and the RoIAlign /
RoIPool modules, on fastconv's kernels (schemas and contracts: csrc/schemas/roi.cpp).

roi_align   backward: _roi_align_backward (deterministic on every backend)
roi_pool    backward: _roi_pool_backward (deterministic on every backend)
Double backward is not supported (a clear error). Under torch.autocast both ops run in float32
and return the input's dtype, as torchvision's autocast kernels do.
"""
import torch

_ops = torch.ops.fastconv


def _pair(output_size, op):
    if isinstance(output_size, int):
        return output_size, output_size
    try:
        h, w = output_size
    except (TypeError, ValueError):
        raise TypeError(f"fastconv::{op}: expected output_size to be an int or a pair of ints, "
                        f"got {output_size!r}") from None
    return int(h), int(w)


def _rois(boxes, op):
    """Tensor[K, 5] as is; a list/tuple of Tensor[L, 4] (one per image) -> Tensor[K, 5] whose
    first column is the image index, exactly torchvision's convert_boxes_to_roi_format."""
    if isinstance(boxes, torch.Tensor):
        if boxes.dim() != 2 or boxes.size(1) != 5:
            raise RuntimeError(f"fastconv::{op}: expected boxes of shape (K, 5) holding "
                               f"(batch index, x1, y1, x2, y2), got {list(boxes.shape)}")
        return boxes
    if not isinstance(boxes, (list, tuple)) or not boxes:
        raise RuntimeError(f"fastconv::{op}: expected boxes as a Tensor[K, 5] or a non-empty "
                           f"list of Tensor[L, 4], got {type(boxes).__name__}")
    for i, b in enumerate(boxes):
        if not isinstance(b, torch.Tensor) or b.dim() != 2 or b.size(1) != 4:
            shape = list(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
            raise RuntimeError(f"fastconv::{op}: expected every tensor in the boxes list of "
                               f"shape (L, 4), got {shape} at position {i}")
    ids = torch.cat([torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)], dim=0)
    return torch.cat([ids, torch.cat(list(boxes), dim=0)], dim=1)


def _autocast_float(input, rois):
    """(cast, input, rois): under autocast on the input's device, both in float32 (torchvision's
    autocast policy for these ops), with the caller casting the result back."""
    device = input.device.type
    if device in ("cpu", "cuda") and torch.is_autocast_enabled(device):
        return True, input.float(), rois.float()
    return False, input, rois


def roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """torchvision.ops.roi_align on fastconv's kernels (same arguments and numbers)."""
    rois = _rois(boxes, "roi_align")
    pooled_h, pooled_w = _pair(output_size, "roi_align")
    cast, x, r = _autocast_float(input, rois)
    if cast:
        with torch.autocast(input.device.type, enabled=False):
            out = _ops.roi_align(x, r, float(spatial_scale), pooled_h, pooled_w,
                                 int(sampling_ratio), bool(aligned))
        return out.to(input.dtype)
    return _ops.roi_align(x, r, float(spatial_scale), pooled_h, pooled_w, int(sampling_ratio),
                          bool(aligned))


def roi_pool(input, boxes, output_size, spatial_scale=1.0):
    """torchvision.ops.roi_pool on fastconv's kernels (same arguments and numbers)."""
    rois = _rois(boxes, "roi_pool")
    pooled_h, pooled_w = _pair(output_size, "roi_pool")
    cast, x, r = _autocast_float(input, rois)
    if cast:
        with torch.autocast(input.device.type, enabled=False):
            out, _ = _ops.roi_pool(x, r, float(spatial_scale), pooled_h, pooled_w)
        return out.to(input.dtype)
    out, _ = _ops.roi_pool(x, r, float(spatial_scale), pooled_h, pooled_w)
    return out


# The modules repeat torchvision's (constructor, attributes, repr) rather than subclass them:
# torchvision is not a dependency of fastconv.
class RoIAlign(torch.nn.Module):
    """See roi_align; torchvision.ops.RoIAlign's constructor, attributes and repr."""

    def __init__(self, output_size, spatial_scale, sampling_ratio, aligned=False):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned

    def forward(self, input, rois):
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio,
                         self.aligned)

    def __repr__(self):
        return (f"{self.__class__.__name__}(output_size={self.output_size}, "
                f"spatial_scale={self.spatial_scale}, sampling_ratio={self.sampling_ratio}, "
                f"aligned={self.aligned})")


class RoIPool(torch.nn.Module):
    """See roi_pool; torchvision.ops.RoIPool's constructor, attributes and repr."""

    def __init__(self, output_size, spatial_scale):
        super().__init__()
        self.output_size = output_size
        self.spatial_scale = spatial_scale

    def forward(self, input, rois):
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def __repr__(self):
        return (f"{self.__class__.__name__}(output_size={self.output_size}, "
                f"spatial_scale={self.spatial_scale})")


# ---- autograd ---------------------------------------------------------------------------------
def _channels_last(input):
    return input.dim() == 4 and input.is_contiguous(memory_format=torch.channels_last) \
        and not input.is_contiguous()


def _roi_align_setup_context(ctx, inputs, output):
    input, rois, spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.args = (spatial_scale, pooled_h, pooled_w, sampling_ratio, aligned)
    ctx.input_size = input.shape
    # the memory format the forward kept (suggest_memory_format): the gradient's too
    ctx.channels_last = _channels_last(input)


# Boxes get no gradient (None), as in torchvision, even when they require grad.
def _roi_align_backward(ctx, grad_output):
    (rois,) = ctx.saved_tensors
    grad_input = None
    if ctx.needs_input_grad[0]:
        grad_input = _ops._roi_align_backward(grad_output, rois, *ctx.args, ctx.input_size,
                                              ctx.channels_last)
    return grad_input, None, None, None, None, None, None


torch.library.register_autograd("fastconv::roi_align", _roi_align_backward,
                                setup_context=_roi_align_setup_context)


def _roi_pool_setup_context(ctx, inputs, output):
    input, rois, spatial_scale, pooled_h, pooled_w = inputs
    _, argmax = output
    ctx.save_for_backward(rois, argmax)
    ctx.args = (spatial_scale, pooled_h, pooled_w)
    ctx.input_size = input.shape
    ctx.channels_last = _channels_last(input)
    ctx.mark_non_differentiable(argmax)
    ctx.set_materialize_grads(False)


def _roi_pool_backward(ctx, grad_output, _grad_argmax):
    rois, argmax = ctx.saved_tensors
    grad_input = None
    if ctx.needs_input_grad[0] and grad_output is not None:
        grad_input = _ops._roi_pool_backward(grad_output, rois, argmax, *ctx.args,
                                             ctx.input_size, ctx.channels_last)
    return grad_input, None, None, None, None


torch.library.register_autograd("fastconv::roi_pool", _roi_pool_backward,
                                setup_context=_roi_pool_setup_context)


def _no_double_backward(op):
    def backward(ctx, *grads):
        raise RuntimeError(f"fastconv::{op}: expected a first-order gradient only, got a "
                           "request for double backward (not supported)")
    return backward


for _op in ("_roi_align_backward", "_roi_pool_backward"):
    torch.library.register_autograd(f"fastconv::{_op}", _no_double_backward(_op))


__all__ = ["roi_align", "roi_pool", "RoIAlign", "RoIPool"]
