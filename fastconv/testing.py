"""Helpers for fastconv's tests and for users testing code built on fastconv."""
import torch

# Tolerances for comparing a fastconv result with PyTorch's, per dtype. fp16/bf16 sums are
# accumulated in fp32 by fastconv and rounded once; PyTorch may round after every addition,
# so the two can differ by a few units in the last place of the low-precision result.
TOLERANCES = {
    torch.float64: dict(rtol=1e-12, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.float16: dict(rtol=1e-2, atol=1e-2),
    torch.bfloat16: dict(rtol=2e-2, atol=2e-2),
}


def tolerances(dtype):
    return TOLERANCES[dtype]


def distinct_values(shape, dtype=torch.float64, device="cpu", scale=1.0):
    """A tensor whose values are all distinct and at least `scale / numel` apart: max-pool is
    differentiable there, so gradcheck's finite differences never cross a tie."""
    n = 1
    for s in shape:
        n *= s
    values = torch.randperm(n, device=device).to(dtype) * (scale / max(n, 1)) - scale / 2
    return values.reshape(shape)
