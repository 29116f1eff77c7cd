"""Per-family registration of autograd for the `torch.ops.fastconv` operators.

The schemas, kernels and Meta (fake) kernels are registered by the compiled library; each
module here adds what Python does best: autograd formulas built from other fastconv ops.
"""
from fastconv.ops import pool  # noqa: F401
from fastconv.ops import batch_norm  # noqa: F401,E402
from fastconv.ops import roi  # noqa: F401,E402
from fastconv.ops.roi import RoIAlign, RoIPool, roi_align, roi_pool  # noqa: F401,E402
import importlib.util as _util  # noqa: E402

if _util.find_spec("torchvision") is not None:  # optional: the drop-in for torchvision's pooler
    from fastconv.ops.poolers import MultiScaleRoIAlign  # noqa: F401
