"""Convolutional networks built from fastconv modules.

Where an architecture is torchvision's (ResNet, ResNeXt, the box head of Faster R-CNN), the
module and parameter names are torchvision's too, so its state_dicts load with strict=True.
"""
from fastconv.models.fast_rcnn import (FastRCNN, FastRCNNHead, FastRCNNPredictor, TwoMLPHead,
                                       fast_rcnn_resnet18)
from fastconv.models.fcn import FCN, FCNHead, fcn_resnet50
from fastconv.models.lenet import LeNet
from fastconv.models.resnet import (BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50,
                                    resnext50_32x4d)

__all__ = ["LeNet", "ResNet", "BasicBlock", "Bottleneck", "resnet18", "resnet34", "resnet50",
           "resnext50_32x4d", "FCN", "FCNHead", "fcn_resnet50", "FastRCNN", "FastRCNNHead",
           "TwoMLPHead", "FastRCNNPredictor", "fast_rcnn_resnet18"]
