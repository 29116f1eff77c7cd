"""fastconv: hand-written CPU and CUDA kernels for convolutional-network primitives.

Importing the package loads the compiled library (which registers the `torch.ops.fastconv`
schemas and their CPU, CUDA and Meta kernels) and then the Python layers (autograd).
"""
import torch

from fastconv import _C  # noqa: F401  (runs the TORCH_LIBRARY registrations)
from fastconv import ops  # noqa: F401  (registers autograd)
from fastconv import nn  # noqa: F401

__version__ = "0.1.0"


def cuda_kernels_built() -> bool:
    """Whether this build of fastconv contains CUDA kernels (independent of a GPU being present)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key(
        "fastconv::max_pool2d_with_indices", "CUDA")


__all__ = ["cuda_kernels_built", "nn", "ops"]
