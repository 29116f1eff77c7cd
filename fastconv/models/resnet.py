"""ResNet and ResNeXt built from fastconv modules, with torchvision's parameter names.

The architecture, initialization and module names are torchvision's (`torchvision.models.
resnet`), so a torchvision state_dict loads with `strict=True` and the converted model computes
the same function. The difference is inside the blocks: every BatchNorm that torchvision follows
by a ReLU is a `BatchNormReLU2d`, and the last BatchNorm of each block whose shortcut is its
input takes the shortcut as its `residual`, computing relu(bn(x) + shortcut) in one fused pass
(downsample blocks add and apply the ReLU separately: see _last_batch_norm). `BatchNormReLU2d` holds exactly
BatchNorm2d's parameters and buffers, and ReLU has none, so the state_dict keys are unchanged.
"""
from typing import List, Optional, Type, Union

import torch
from torch import nn

from fastconv.nn import BatchNorm2d, BatchNormReLU2d, Conv2d, MaxPool2d

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "resnet18", "resnet34", "resnet50",
           "resnext50_32x4d"]


def conv3x3(in_planes, out_planes, stride=1, groups=1, dilation=1):
    """3x3 convolution with padding (= dilation, so the spatial size only changes by stride)."""
    return Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation,
                  groups=groups, bias=False, dilation=dilation)


def conv1x1(in_planes, out_planes, stride=1):
    return Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def _last_batch_norm(channels, downsample):
    """The block's last BatchNorm: fused with the shortcut's addition and the ReLU when the
    shortcut is the block input, which the block's first convolution saves for backward
    anyway. A downsample shortcut would be saved only for the fused backward (it recomputes
    the ReLU mask from the BatchNorm's input and the residual): one activation more than a
    separate add + ReLU, whose ReLU saves its output, which the next block saves anyway. So
    downsample blocks keep a plain BatchNorm (fastconv.nn.convert does the same)."""
    return BatchNormReLU2d(channels) if downsample is None else BatchNorm2d(channels)


def _add_relu(out, shortcut):
    return torch.relu_(out + shortcut)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions; bn2 adds the shortcut and applies the block's final ReLU."""
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64,
                 dilation=1):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = BatchNormReLU2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = _last_batch_norm(planes, downsample)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        out = self.bn1(self.conv1(x))
        if self.downsample is None:
            return self.bn2(self.conv2(out), x)
        return _add_relu(self.bn2(self.conv2(out)), self.downsample(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (grouped for ResNeXt, stride here as in ResNet v1.5), 1x1 expand; bn3
    adds the shortcut and applies the block's final ReLU."""
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64,
                 dilation=1):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = BatchNormReLU2d(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = BatchNormReLU2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = _last_batch_norm(planes * self.expansion, downsample)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        out = self.bn1(self.conv1(x))
        out = self.bn2(self.conv2(out))
        if self.downsample is None:
            return self.bn3(self.conv3(out), x)
        return _add_relu(self.bn3(self.conv3(out)), self.downsample(x))


Block = Type[Union[BasicBlock, Bottleneck]]


class ResNet(nn.Module):
    """torchvision's ResNet (same arguments except norm_layer, which is always BatchNorm).

    `features(x)` returns the last stage's feature map (stride 32, or 8 with dilation in the
    last two stages). With num_classes=None the network is only that trunk: no avgpool and fc
    (and no such state_dict keys, as torchvision's IntermediateLayerGetter backbones), and
    forward returns the feature map; the FCN and Fast R-CNN models build on it.
    """

    def __init__(self, block: Block, layers: List[int], num_classes=1000,
                 zero_init_residual=False, groups=1, width_per_group=64,
                 replace_stride_with_dilation: Optional[List[bool]] = None):
        super().__init__()
        self.inplanes = 64
        self.dilation = 1
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False, False, False]
        if len(replace_stride_with_dilation) != 3:
            raise ValueError("replace_stride_with_dilation should be None or a 3-element "
                             f"tuple, got {replace_stride_with_dilation}")
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = BatchNormReLU2d(self.inplanes)
        self.maxpool = MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2,
                                       dilate=replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2,
                                       dilate=replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2,
                                       dilate=replace_stride_with_dilation[2])
        self.out_channels = 512 * block.expansion
        if num_classes is not None:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(self.out_channels, num_classes)
        else:
            self.avgpool = self.fc = None

        for m in self.modules():  # torchvision's initialization, in the same order
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, block: Block, planes, blocks, stride=1, dilate=False):
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, self.groups,
                        self.base_width, previous_dilation)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, groups=self.groups,
                                base_width=self.base_width, dilation=self.dilation))
        return nn.Sequential(*layers)

    def features(self, x):
        x = self.maxpool(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x):
        if self.fc is None:
            return self.features(x)
        x = self.avgpool(self.features(x))
        return self.fc(torch.flatten(x, 1))


def _resnet(block: Block, layers, **kwargs) -> ResNet:
    return ResNet(block, layers, **kwargs)


def resnet18(**kwargs) -> ResNet:
    """ResNet-18 (torchvision.models.resnet18's architecture and parameter names)."""
    return _resnet(BasicBlock, [2, 2, 2, 2], **kwargs)


def resnet34(**kwargs) -> ResNet:
    return _resnet(BasicBlock, [3, 4, 6, 3], **kwargs)


def resnet50(**kwargs) -> ResNet:
    """ResNet-50 v1.5 (stride 2 on the 3x3 convolution), as torchvision."""
    return _resnet(Bottleneck, [3, 4, 6, 3], **kwargs)


def resnext50_32x4d(**kwargs) -> ResNet:
    """ResNeXt-50 32x4d: Bottleneck blocks with 32 groups of width 4 in the 3x3 convolution."""
    kwargs.update(groups=32, width_per_group=4)
    return _resnet(Bottleneck, [3, 4, 6, 3], **kwargs)
