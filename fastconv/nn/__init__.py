"""fastconv.nn: drop-in modules and the functional interface."""
from fastconv.nn import functional  # noqa: F401
from fastconv.nn.conv import Conv2d, ConvTranspose2d
from fastconv.nn.modules import MaxPool2d, MaxUnpool2d
from fastconv.nn.batch_norm import BatchNorm2d, BatchNormReLU2d, SyncBatchNorm
from fastconv.ops.roi import RoIAlign, RoIPool  # ROI modules live with their ops (torchvision.ops)
from fastconv.nn.convert import ConversionSummary, convert

__all__ = ["functional", "Conv2d", "ConvTranspose2d", "MaxPool2d", "MaxUnpool2d",
           "BatchNorm2d", "BatchNormReLU2d", "SyncBatchNorm", "RoIAlign", "RoIPool",
           "convert", "ConversionSummary"]
