"""FCN: a fully convolutional segmentation network that upsamples with a transposed convolution.

The backbone and the head are torchvision's `fcn_resnet50` (ResNet-50 with dilation instead of
stride in its last two stages, output stride 8; FCNHead = 3x3 conv, BN, ReLU, dropout, 1x1
conv), with the same parameter names, so its `backbone.*` and `classifier.*` weights load
unchanged. Where torchvision upsamples the class scores with `F.interpolate(mode="bilinear")`,
this FCN does what the FCN paper (Long et al., 2015) does: a transposed convolution with
stride = output stride, one filter per class (groups = classes), initialized to bilinear
interpolation and learned from there. Its kernel 2f, stride f, padding f/2 reproduces bilinear
interpolation (align_corners=False) away from the border; within f/2 pixels of the border the
zero padding of the transposed convolution weighs the outermost scores less.
"""
import torch
from torch import nn

from fastconv.nn import BatchNormReLU2d, Conv2d, ConvTranspose2d
from fastconv.models.resnet import resnet50

__all__ = ["FCN", "FCNHead", "bilinear_kernel", "fcn_resnet50"]


def bilinear_kernel(size, dtype=torch.float32):
    """A size x size 2-D bilinear interpolation filter (the FCN reference implementation's
    `upsample_filt`): the outer product of 1 - |i - center| / factor."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    taps = 1 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor
    return torch.outer(taps, taps).to(dtype)


class FCNHead(nn.Sequential):
    """torchvision's FCNHead with the BN and ReLU fused; index 2 (the ReLU) is an Identity so
    the indices of the later layers, and thus the state_dict keys, stay torchvision's."""

    def __init__(self, in_channels, channels):
        inter_channels = in_channels // 4
        super().__init__(
            Conv2d(in_channels, inter_channels, 3, padding=1, bias=False),
            BatchNormReLU2d(inter_channels),
            nn.Identity(),
            nn.Dropout(0.1),
            Conv2d(inter_channels, channels, 1),
        )


class FCN(nn.Module):
    """backbone (features at stride `output_stride`) -> head (class scores) -> learned
    transposed-convolution upsampling to the input size."""

    def __init__(self, backbone, classifier, num_classes, output_stride):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        f = output_stride
        self.upsample = ConvTranspose2d(num_classes, num_classes, kernel_size=2 * f, stride=f,
                                        padding=f // 2, groups=num_classes, bias=False)
        with torch.no_grad():
            self.upsample.weight.copy_(bilinear_kernel(2 * f).expand_as(self.upsample.weight))

    def forward(self, x):
        height, width = x.shape[-2:]
        scores = self.upsample(self.classifier(self.backbone(x)))
        # Each strided layer rounds up, so the features cover ceil(size / stride) positions
        # and the upsampled scores at least the input: crop the excess at the far end.
        return scores[..., :height, :width]


def fcn_resnet50(num_classes=21, **kwargs) -> FCN:
    """FCN on ResNet-50 with output stride 8, as torchvision.models.segmentation.fcn_resnet50
    (without the auxiliary classifier)."""
    backbone = resnet50(num_classes=None, replace_stride_with_dilation=[False, True, True],
                        **kwargs)
    return FCN(backbone, FCNHead(backbone.out_channels, num_classes), num_classes,
               output_stride=8)
