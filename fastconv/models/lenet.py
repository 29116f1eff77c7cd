"""LeNet: the classic convolution -> pool -> convolution -> pool -> fully connected design.

As in LeCun et al. (1998) LeNet-5: 6 then 16 feature maps from 5x5 convolutions, each followed
by 2x2 subsampling, then fully connected layers of 120 and 84 units; with the modern choices
of ReLU and max pooling. The first convolution pads by 2 (as LeNet-5 effectively did by
drawing 28x28 digits on a 32x32 canvas), so any image side that leaves a positive size after
the second convolution works: 28 (MNIST) gives LeNet-5's 16x5x5 features, 16 gives 16x2x2.
"""
import torch
from torch import nn

from fastconv.nn import Conv2d, MaxPool2d

__all__ = ["LeNet"]


class LeNet(nn.Module):
    def __init__(self, num_classes=10, in_channels=1, image_size=28):
        super().__init__()
        side = (image_size // 2 - 4) // 2  # conv1 keeps the size, pool halves, conv2 takes 4
        if side < 1:
            raise ValueError(f"LeNet: expected image_size >= 12, got {image_size}")
        self.features = nn.Sequential(
            Conv2d(in_channels, 6, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            MaxPool2d(2),
            Conv2d(6, 16, kernel_size=5), nn.ReLU(inplace=True),
            MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * side * side, 120), nn.ReLU(inplace=True),
            nn.Linear(120, 84), nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))
