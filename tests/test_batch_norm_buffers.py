"""Activation-sized outputs of the CPU BatchNorm kernels come from a cache of 2 MB-aligned
huge-page blocks (csrc/cpu/batch_norm_buffers.h): a training step that frees its outputs gets
the same memory back at the next step (no page faults), and the tensors stay ordinary ones."""
import resource

import torch
import torch.nn.functional as tF

import fastconv.nn.functional as F


def step(x, gy, rm, rv, w, b):
    xg = x.detach().requires_grad_()
    y = F.batch_norm_relu(xg, rm, rv, w, b, training=True)
    (gx,) = torch.autograd.grad(y, xg, gy)
    return y, gx


def test_outputs_reuse_freed_blocks_without_page_faults():
    x = torch.randn(2, 16, 256, 160)  # 5.2 MB: above the cache's 4 MB floor
    gy = torch.randn_like(x)
    w, b = torch.rand(16) + 0.5, torch.randn(16)
    rm, rv = torch.zeros(16), torch.ones(16)
    y, gx = step(x, gy, rm, rv, w, b)
    pointers = {y.data_ptr(), gx.data_ptr()}
    assert all(p % (2 << 20) == 0 for p in pointers)  # 2 MB aligned: huge pages cover them
    expected = tF.relu(tF.batch_norm(x, None, None, w, b, True))
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    del y, gx
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y, gx = step(x, gy, rm, rv, w, b)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert {y.data_ptr(), gx.data_ptr()} == pointers
    # two fresh 5.2 MB outputs would fault ~2500 times in 4 KB pages; a handful of faults
    # elsewhere (Python, autograd) may remain
    assert faults < 100, faults
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


def test_cached_output_is_an_ordinary_tensor():
    x = torch.randn(2, 16, 256, 160)
    y = F.batch_norm_relu(x.contiguous(memory_format=torch.channels_last), None, None,
                          training=True)
    assert y.is_contiguous(memory_format=torch.channels_last) and y.shape == x.shape
    y = F.batch_norm_relu(x, None, None, training=True)
    y2 = y.clone()
    y.resize_(4, 16, 256, 160)  # the storage grows through the cache's allocator, data kept
    assert torch.equal(y[:2], y2)
    y.add_(1)
    assert torch.equal(y[:2], y2 + 1)
    z = y._lazy_clone()  # copy-on-write clones need a "simple" data pointer (context == data)
    z.add_(1)
    assert torch.equal(y[:2], y2 + 1) and torch.equal(z[:2], (y2 + 1) + 1)
