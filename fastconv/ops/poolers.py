"""MultiScaleRoIAlign running fastconv's roi_align: a drop-in for torchvision's.

torchvision.ops.MultiScaleRoIAlign (the box and mask pooler of Faster/Mask R-CNN) assigns
each box to one feature-pyramid level (FPN paper, eq. 1) and calls torchvision's roi_align per
level. The subclass below keeps everything about the module (constructor, attributes, repr,
level assignment and scale inference, which are torchvision's own helpers) and replaces only
the per-level pooling with fastconv.ops.roi_align.
"""
from typing import List, Optional

import torch
import torchvision
from torch import Tensor
from torchvision.ops import poolers as _tv

__all__ = ["MultiScaleRoIAlign"]


@torch.fx.wrap
def _multiscale_roi_align(x_filtered: List[Tensor], boxes: List[Tensor], output_size,
                          sampling_ratio: int, scales: Optional[List[float]],
                          mapper: Optional[_tv.LevelMapper]) -> Tensor:
    """torchvision.ops.poolers._multiscale_roi_align with fastconv's roi_align per level."""
    from fastconv.ops import roi_align  # the roi family registers after this module loads
    if scales is None or mapper is None:
        raise ValueError("scales and mapper should not be None")
    rois = _tv._convert_to_roi_format(boxes)
    if len(x_filtered) == 1:
        return roi_align(x_filtered[0], rois, output_size=output_size, spatial_scale=scales[0],
                         sampling_ratio=sampling_ratio)
    levels = mapper(boxes)
    first = x_filtered[0]
    result = torch.zeros((len(rois), first.shape[1]) + tuple(output_size), dtype=first.dtype,
                         device=first.device)
    for level, (feature, scale) in enumerate(zip(x_filtered, scales)):
        idx_in_level = torch.where(levels == level)[0]
        pooled = roi_align(feature, rois[idx_in_level], output_size=output_size,
                           spatial_scale=scale, sampling_ratio=sampling_ratio)
        # Under autocast the levels may come out in different dtypes (as in torchvision).
        result[idx_in_level] = pooled.to(result.dtype)
    return result


class MultiScaleRoIAlign(torchvision.ops.MultiScaleRoIAlign):
    """torchvision.ops.MultiScaleRoIAlign (same constructor, attributes, repr and state) whose
    pooling runs fastconv.ops.roi_align."""

    def forward(self, x, boxes, image_shapes):
        x_filtered = _tv._filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _tv._setup_scales(
                x_filtered, image_shapes, self.canonical_scale, self.canonical_level)
        return _multiscale_roi_align(x_filtered, boxes, self.output_size, self.sampling_ratio,
                                     self.scales, self.map_levels)
