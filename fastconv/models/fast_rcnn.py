"""Fast R-CNN: backbone features -> RoI pooling -> box head -> class scores and box deltas.

Girshick (2015): one convolutional pass over the image, then for each region of interest a
fixed-size feature (RoIPool; RoIAlign since Mask R-CNN), two fully connected layers (fc6,
fc7) and two sibling outputs, the class scores and the per-class box regression. The head's
modules carry torchvision's names (`box_roi_pool`, `box_head.fc6/fc7`,
`box_predictor.cls_score/bbox_pred`, as in `FasterRCNN.roi_heads`), so torchvision's
`TwoMLPHead` and `FastRCNNPredictor` weights load unchanged.
"""
import torch
from torch import nn
from torch.nn import functional as F

from fastconv.models.resnet import resnet18
from fastconv.ops import MultiScaleRoIAlign, RoIAlign, RoIPool

__all__ = ["FastRCNN", "FastRCNNHead", "TwoMLPHead", "FastRCNNPredictor", "fast_rcnn_resnet18"]


class TwoMLPHead(nn.Module):
    """torchvision.models.detection.faster_rcnn.TwoMLPHead: fc6 and fc7 with ReLU."""

    def __init__(self, in_channels, representation_size):
        super().__init__()
        self.fc6 = nn.Linear(in_channels, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x):
        x = x.flatten(start_dim=1)
        return F.relu(self.fc7(F.relu(self.fc6(x))))


class FastRCNNPredictor(nn.Module):
    """torchvision's FastRCNNPredictor: class scores and per-class box deltas (4 per class)."""

    def __init__(self, in_channels, num_classes):
        super().__init__()
        self.cls_score = nn.Linear(in_channels, num_classes)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)

    def forward(self, x):
        x = x.flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)


class FastRCNNHead(nn.Module):
    """RoI pooling (fastconv RoIAlign, RoIPool or MultiScaleRoIAlign) + box head + predictor.

    forward(features, boxes, image_shapes=None) -> (class_logits [K, classes],
    box_regression [K, 4 * classes]); features is a tensor for RoIAlign/RoIPool, a dict of
    levels for MultiScaleRoIAlign (which also needs the image sizes); boxes are a list of
    [L, 4] tensors (one per image, image coordinates) or one [K, 5] tensor (batch index first).
    """

    def __init__(self, box_roi_pool, in_channels, num_classes, representation_size=1024):
        super().__init__()
        out = box_roi_pool.output_size
        out_h, out_w = (out, out) if isinstance(out, int) else tuple(out)
        self.box_roi_pool = box_roi_pool
        self.box_head = TwoMLPHead(in_channels * out_h * out_w, representation_size)
        self.box_predictor = FastRCNNPredictor(representation_size, num_classes)

    def forward(self, features, boxes, image_shapes=None):
        if isinstance(self.box_roi_pool, MultiScaleRoIAlign):
            pooled = self.box_roi_pool(features, boxes, image_shapes)
        else:
            pooled = self.box_roi_pool(features, boxes)
        return self.box_predictor(self.box_head(pooled))


class FastRCNN(nn.Module):
    """A backbone returning one feature map, and a FastRCNNHead on it.

    forward(images [N, 3, H, W], boxes) -> (class_logits, box_regression) for every box;
    proposals come from outside (selective search in the paper, an RPN in Faster R-CNN).
    """

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, images, boxes):
        image_shapes = [tuple(images.shape[-2:])] * images.shape[0]
        return self.head(self.backbone(images), boxes, image_shapes)


def fast_rcnn_resnet18(num_classes=21, pooler="align", output_size=7, sampling_ratio=2,
                       representation_size=1024) -> FastRCNN:
    """Fast R-CNN on the ResNet-18 trunk (stride 32, 512 channels) with RoIAlign
    (pooler="align", torchvision's sampling_ratio=2) or RoIPool (pooler="pool")."""
    backbone = resnet18(num_classes=None)
    scale = 1.0 / 32
    if pooler == "align":
        pool = RoIAlign(output_size, spatial_scale=scale, sampling_ratio=sampling_ratio)
    elif pooler == "pool":
        pool = RoIPool(output_size, spatial_scale=scale)
    else:
        raise ValueError(f"fast_rcnn_resnet18: expected pooler 'align' or 'pool', got {pooler!r}")
    head = FastRCNNHead(pool, backbone.out_channels, num_classes, representation_size)
    return FastRCNN(backbone, head)
