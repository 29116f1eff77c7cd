"""The one-op forms of the BatchNorm family: the training forward updates the running
statistics itself and the backward is one op (_batch_norm_backward), with autograd in C++.
Checked against the composed ops they replace, on every device; the CPU kernels' two schedules
(channel-fused and chunk-parallel, picked by channel and thread count) must agree bit for bit."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fastconv.nn.functional as F

ops = torch.ops.fastconv


def make(shape, device, memory_format=torch.contiguous_format, dtype=torch.float32):
    x = torch.randn(shape, dtype=dtype, device=device)
    return x.contiguous(memory_format=memory_format) if x.dim() == 4 else x


class RecordFastconvOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "fastconv":
            self.names.append(func._schema.name.split("::")[1])
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("residual", [False, True], ids=["relu", "add_relu"])
def test_training_step_is_one_op_forward_one_op_backward(residual):
    x = make((2, 3, 4, 4), "cpu").requires_grad_()
    r = make((2, 3, 4, 4), "cpu").requires_grad_() if residual else None
    w, b = torch.rand(3).requires_grad_(), torch.randn(3).requires_grad_()
    rm, rv = torch.zeros(3), torch.ones(3)
    with RecordFastconvOps() as rec:
        if residual:
            y = F.batch_norm_add_relu(x, r, rm, rv, w, b, training=True)
        else:
            y = F.batch_norm_relu(x, rm, rv, w, b, training=True)
        y.sum().backward()
    assert rec.names == ["_batch_norm_forward_train", "_batch_norm_backward"]
    assert x.grad is not None and w.grad is not None and b.grad is not None
    assert r is None or r.grad is not None
    assert not torch.equal(rm, torch.zeros(3))  # updated by the forward op itself


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=str)
def test_forward_train_updates_running_stats_as_update_stats(device, memory_format):
    x = make((3, 5, 4, 6), device, memory_format)
    rm, rv = torch.randn(5, device=device), torch.rand(5, device=device) + 0.5
    rm2, rv2 = rm.clone(), rv.clone()
    y, mean, var = ops._batch_norm_forward_train(x, None, None, None, rm, rv, 0.3, 1e-5, True)
    y2, mean2, var2 = ops._batch_norm_forward_train(x, None, None, None, None, None, 0.3, 1e-5,
                                                    True)
    ops._batch_norm_update_stats(mean2, var2, x.numel() // 5, 0.3, rm2, rv2)
    for a, b in ((y, y2), (mean, mean2), (var, var2), (rm, rm2), (rv, rv2)):
        assert torch.equal(a, b)
    assert not torch.equal(rm, torch.zeros_like(rm))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("relu, residual", [(True, True), (True, False), (False, True)])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=str)
def test_backward_equals_reduce_then_apply(device, training, relu, residual, memory_format):
    shape = (2, 6, 5, 7)
    g, x = make(shape, device, memory_format), make(shape, device, memory_format)
    r = make(shape, device, memory_format) if residual else None
    w, b = torch.rand(6, device=device) + 0.5, torch.randn(6, device=device)
    mean, var = torch.randn(6, device=device) * 0.1, torch.rand(6, device=device) + 0.5
    gx, gw, gb, gr = ops._batch_norm_backward(g, x, mean, var, w, b, r, 1e-5, relu, training,
                                              residual and relu)
    sd, sx, gw2 = ops._batch_norm_backward_reduce(g, x, mean, var, w, b, r, 1e-5, relu)
    sums = (sd, sx) if training else (None, None)
    count = x.numel() // 6
    if residual and relu:
        gx2, gr2 = ops._batch_norm_add_relu_backward_apply(g, x, mean, var, w, b, r, *sums,
                                                           count, 1e-5)
    else:
        gx2 = ops._batch_norm_backward_apply(g, x, mean, var, w, b, r, *sums, count, 1e-5, relu)
    assert torch.equal(gx, gx2) and torch.equal(gw, gw2) and torch.equal(gb, sd)
    assert gx.stride() == x.stride()
    if residual and relu:
        assert torch.equal(gr, gr2)
    else:
        assert gr.shape == (0,)


def test_backward_optional_vectors_and_empty_batch(device):
    x = make((0, 4, 3, 3), device)
    gx, gw, gb, gr = ops._batch_norm_backward(x, x, torch.zeros(4, device=device),
                                              torch.ones(4, device=device), None, None, None,
                                              1e-5, True, True, False)
    assert gx.shape == x.shape and gr.shape == (0,)
    assert torch.equal(gw, torch.zeros(4, device=device)) and torch.equal(gb, gw)


@pytest.mark.parametrize("shape", [(2, 8, 70, 70), (3, 16, 5, 3), (100, 16, 7, 7)], ids=str)
def test_cpu_schedules_are_bit_identical(shape):
    # 1 thread: every shape runs channel-fused; 4 threads with C < 16: chunk-parallel.
    # Both use the same chunks (4096 values: 70x70 planes have two; 7x7 planes are grouped by
    # 83, so 100 planes make two chunks per channel) merged in the same order. Channel-fused
    # reads small planes in blocks of channels (all 16 at once here; test_batch_norm_blocks.py
    # checks the block size).
    x, g, r = make(shape, "cpu"), make(shape, "cpu"), make(shape, "cpu")
    w, b = torch.rand(shape[1]) + 0.5, torch.randn(shape[1])
    results = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 4):
            torch.set_num_threads(threads)
            rm, rv = torch.zeros(shape[1]), torch.ones(shape[1])
            y, mean, var = ops._batch_norm_forward_train(x, w, b, r, rm, rv, 0.1, 1e-5, True)
            grads = ops._batch_norm_backward(g, x, mean, var, w, b, r, 1e-5, True, True, True)
            results.append((y, mean, var, rm, rv, *grads))
    finally:
        torch.set_num_threads(previous)
    for a, b_ in zip(*results):
        assert torch.equal(a, b_)


def test_eval_backward_with_stats_requiring_grad_is_a_clear_error():
    x = make((2, 3, 4, 4), "cpu").requires_grad_()
    mean = torch.zeros(3, requires_grad=True)
    y = ops.batch_norm_apply(x, mean, torch.ones(3), None, None, None, 1e-5, True)
    with pytest.raises(RuntimeError, match="expected mean and var that do not require grad"):
        y.sum().backward()


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_no_graph_when_nothing_requires_grad(training):
    # the C++ autograd kernels skip the graph node when nothing is differentiated; the results,
    # the running-statistics update and the graph for a lone weight that requires grad must be
    # those of the recorded path
    x = make((2, 3, 4, 4), "cpu")
    w, b = torch.rand(3) + 0.5, torch.randn(3)
    stats = {}
    for mode in ("plain", "no_grad", "weight_grad"):
        rm, rv = torch.zeros(3), torch.ones(3)
        wm = w.clone().requires_grad_(mode == "weight_grad")
        with torch.set_grad_enabled(mode != "no_grad"):
            y = F.batch_norm_relu(x, rm, rv, wm, b, training=training)
        assert (y.grad_fn is not None) == (mode == "weight_grad")
        assert y.requires_grad == (mode == "weight_grad")
        if mode == "weight_grad":
            (gw,) = torch.autograd.grad(y.sum(), wm)
            assert gw.abs().sum() > 0
        stats[mode] = (y.detach(), rm, rv)
    for mode in ("no_grad", "weight_grad"):
        for a, b_ in zip(stats["plain"], stats[mode]):
            assert torch.equal(a, b_)
    assert training == (not torch.equal(stats["plain"][1], torch.zeros(3)))
