"""Large outputs of the CPU BatchNorm and ROI kernels come from one cache of 2 MB-aligned
huge-page blocks (csrc/cpu/buffer_cache.h): a training step that frees its outputs gets the
same memory back at the next step (no page faults), and the tensors stay ordinary ones.

The reuse checks run in a fresh process each: blocks that earlier tests freed into the same
cache (of the same rounded size) would otherwise be handed out first."""
import resource
import subprocess
import sys

import torch
import torch.nn.functional as tF
import torchvision

import fastconv.nn.functional as F
from fastconv.ops import roi_align, roi_pool


def step(x, gy, rm, rv, w, b):
    xg = x.detach().requires_grad_()
    y = F.batch_norm_relu(xg, rm, rv, w, b, training=True)
    (gx,) = torch.autograd.grad(y, xg, gy)
    return y, gx


def in_fresh_process(check):
    """Runs this module's function `check` in a new Python process; fails with its output."""
    run = subprocess.run([sys.executable, __file__, check.__name__], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def test_outputs_reuse_freed_blocks_without_page_faults():
    in_fresh_process(check_outputs_reuse_freed_blocks)


def check_outputs_reuse_freed_blocks():
    x = torch.randn(2, 16, 256, 160)  # 5.2 MB: above the cache's 4 MB floor
    gy = torch.randn_like(x)
    w, b = torch.rand(16) + 0.5, torch.randn(16)
    rm, rv = torch.zeros(16), torch.ones(16)
    y, gx = step(x, gy, rm, rv, w, b)
    pointers = {y.data_ptr(), gx.data_ptr()}
    assert all(p % (2 << 20) == 0 for p in pointers)  # 2 MB aligned: huge pages cover them
    expected = tF.relu(tF.batch_norm(x, None, None, w, b, True))
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    held = torch.ops.fastconv._cpu_cache_held_bytes()
    del y, gx
    # the two 6 MB blocks are kept, then taken again by the next step. Without the cache
    # (FASTCONV_CPU_CACHE_BYTES=0) the pointer and fault checks alone still pass: glibc hands
    # the same addresses back, and a fresh 2 MB-aligned mmap faults in huge pages (3 per block)
    assert torch.ops.fastconv._cpu_cache_held_bytes() - held == 2 * (6 << 20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y, gx = step(x, gy, rm, rv, w, b)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert torch.ops.fastconv._cpu_cache_held_bytes() == held
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


def roi_pool_step(x, boxes, size):
    """roi_pool forward and backward through the ops: (output, argmax, grad_input)."""
    out, argmax = torch.ops.fastconv.roi_pool(x, boxes, 1.0, size, size)
    gx = torch.ops.fastconv._roi_pool_backward(torch.ones_like(out), boxes, argmax, 1.0, size,
                                              size, list(x.shape), False)
    return out, argmax, gx


def roi_align_step(x, boxes, size):
    """roi_align forward and backward through autograd: (output, grad_input)."""
    xg = x.detach().requires_grad_()
    y = roi_align(xg, boxes, size, sampling_ratio=2, aligned=True)
    (gx,) = torch.autograd.grad(y, xg, torch.ones_like(y))
    return y, gx


def test_roi_outputs_and_gradients_reuse_freed_blocks():
    in_fresh_process(check_roi_outputs_reuse_freed_blocks)


def check_roi_outputs_reuse_freed_blocks():
    # 2x64x96x96 map: 4.7 MB input gradient; 160 boxes x 64 x 11 x 11: 4.96 MB output (and
    # as much argmax for roi_pool); all above the cache's 4 MB floor. Blocks of one size may
    # come back in another order, so the sets of pointers are compared.
    x = torch.randn(2, 64, 96, 96)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(160, 2, generator=g) * 60
    wh = torch.rand(160, 2, generator=g) * 30 + 1
    boxes = torch.cat([torch.arange(160).remainder(2)[:, None].float(), xy, xy + wh], 1)
    first = roi_pool_step(x, boxes, 11)
    pointers = {t.data_ptr() for t in first}
    assert all(p % (2 << 20) == 0 for p in pointers)
    del first
    out, _, gx = roi_pool_step(x, boxes, 11)
    assert {t.data_ptr() for t in (out, _, gx)} == pointers
    xg = x.detach().requires_grad_()
    y_ref = torchvision.ops.roi_pool(xg, boxes, 11)
    (gx_ref,) = torch.autograd.grad(y_ref, xg, torch.ones_like(y_ref))
    torch.testing.assert_close(out, y_ref, rtol=0, atol=0)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-5, atol=1e-5)

    first = roi_align_step(x, boxes, 11)
    pointers = {t.data_ptr() for t in first}
    assert all(p % (2 << 20) == 0 for p in pointers)
    del first
    y, gx = roi_align_step(x, boxes, 11)
    assert {y.data_ptr(), gx.data_ptr()} == pointers
    xg = x.detach().requires_grad_()
    y_ref = torchvision.ops.roi_align(xg, boxes, 11, sampling_ratio=2, aligned=True)
    (gx_ref,) = torch.autograd.grad(y_ref, xg, torch.ones_like(y_ref))
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-4, atol=1e-4)


if __name__ == "__main__":
    globals()[sys.argv[1]]()
