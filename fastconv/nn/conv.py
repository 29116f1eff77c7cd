"""Drop-in convolution modules: subclasses of torch.nn.Conv2d / ConvTranspose2d, so the
constructor, parameters, initialization, `repr` and `state_dict` are torch's; only the
computation runs fastconv's kernels."""
import torch

from fastconv.nn import functional as F


class Conv2d(torch.nn.Conv2d):
    def _conv_forward(self, input, weight, bias):
        # torch.nn.Conv2d.forward calls this. Non-zero padding modes pad explicitly first,
        # exactly as torch's module does.
        if self.padding_mode != "zeros":
            input = torch.nn.functional.pad(input, self._reversed_padding_repeated_twice,
                                            mode=self.padding_mode)
            return F.conv2d(input, weight, bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(input, weight, bias, self.stride, self.padding, self.dilation,
                        self.groups)


class ConvTranspose2d(torch.nn.ConvTranspose2d):
    def forward(self, input, output_size=None):
        if self.padding_mode != "zeros":  # torch's constructor already refuses other modes
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose2d")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding,
                                              self.kernel_size, 2, self.dilation)
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                  output_padding, self.groups, self.dilation)


__all__ = ["Conv2d", "ConvTranspose2d"]
