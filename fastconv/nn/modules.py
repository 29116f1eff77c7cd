"""Drop-in modules: subclasses of the torch.nn modules they replace, so constructor
arguments, attributes, `repr` and `state_dict` are torch's; only `forward` runs fastconv."""
import torch

from fastconv.nn import functional as F


class MaxPool2d(torch.nn.MaxPool2d):
    def forward(self, input):
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class MaxUnpool2d(torch.nn.MaxUnpool2d):
    def forward(self, input, indices, output_size=None):
        return F.max_unpool2d(input, indices, self.kernel_size, self.stride, self.padding,
                              output_size)


__all__ = ["MaxPool2d", "MaxUnpool2d"]
