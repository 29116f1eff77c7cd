"""fastconv.nn.SyncBatchNorm across two gloo processes on this machine (different batch sizes
per process) against one process fed the whole batch; and under DistributedDataParallel."""
import os
import socket
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as TF

import fastconv

SIZES = [3, 5]   # batch per process: the merge must weight by count
C = 4


def global_batch():
    g = torch.Generator().manual_seed(123)
    x = torch.randn(sum(SIZES), C, 5, 4, generator=g) * 2 + 1
    r = torch.randn(sum(SIZES), C, 5, 4, generator=g)
    dy = torch.randn(sum(SIZES), C, 5, 4, generator=g)
    return x, r, dy


def make_bn(cls, **kw):
    torch.manual_seed(7)
    bn = cls(C, **kw)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


def make_model(sync):
    torch.manual_seed(11)
    conv = torch.nn.Conv2d(3, C, 3, padding=1)
    bn = (fastconv.nn.SyncBatchNorm(C, activation="relu") if sync
          else fastconv.nn.BatchNormReLU2d(C))
    return torch.nn.Sequential(conv, bn)


def model_input():
    return torch.randn(sum(SIZES), 3, 6, 6, generator=torch.Generator().manual_seed(5))


def worker(rank, world, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        torch.set_num_threads(1)
        lo, hi = sum(SIZES[:rank]), sum(SIZES[:rank + 1])
        x, r, dy = global_batch()
        results = {}
        for fmt in (torch.contiguous_format, torch.channels_last):
            bn = make_bn(fastconv.nn.SyncBatchNorm, activation="relu")
            xi = x[lo:hi].contiguous(memory_format=fmt).requires_grad_()
            ri = r[lo:hi].contiguous(memory_format=fmt).requires_grad_()
            y = bn(xi, ri)
            y.backward(dy[lo:hi])
            results[str(fmt)] = dict(y=y.detach(), gx=xi.grad, gr=ri.grad, gw=bn.weight.grad,
                                     gb=bn.bias.grad, rm=bn.running_mean, rv=bn.running_var)
        # under DistributedDataParallel: one training step's gradients. DDP refuses any
        # torch.nn.SyncBatchNorm (fastconv's is a subclass) in a CPU module, because torch's own
        # kernels are GPU-only; fastconv's run on the CPU, so the check is lifted here.
        torch.nn.parallel.DistributedDataParallel._passing_sync_batchnorm_handle = (
            lambda self, module: None)
        model = torch.nn.parallel.DistributedDataParallel(make_model(sync=True))
        out = model(model_input()[lo:hi])
        out.sum().backward()
        results["ddp"] = {name: p.grad for name, p in model.module.named_parameters()}
        results["ddp_out"] = out.detach()
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_results():
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(worker, args=(2, free_port(), out_dir), nprocs=2, join=True)
        yield [torch.load(os.path.join(out_dir, f"rank{r}.pt")) for r in range(2)]


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=str)
def test_two_processes_match_one_process_on_the_whole_batch(two_process_results, fmt):
    x, r, dy = global_batch()
    ref_bn = make_bn(torch.nn.BatchNorm2d)
    xr = x.contiguous(memory_format=fmt).requires_grad_()
    rr = r.contiguous(memory_format=fmt).requires_grad_()
    y = TF.relu(ref_bn(xr) + rr)
    y.backward(dy)
    parts = [res[str(fmt)] for res in two_process_results]
    torch.testing.assert_close(torch.cat([p["y"] for p in parts]), y.detach())
    torch.testing.assert_close(torch.cat([p["gx"] for p in parts]), xr.grad)
    torch.testing.assert_close(torch.cat([p["gr"] for p in parts]), rr.grad)
    # weight/bias gradients stay local (as torch's SyncBatchNorm): their sum is the whole batch's
    torch.testing.assert_close(parts[0]["gw"] + parts[1]["gw"], ref_bn.weight.grad)
    torch.testing.assert_close(parts[0]["gb"] + parts[1]["gb"], ref_bn.bias.grad)
    for p in parts:  # running statistics of the global batch (unbiased over 8 * 20 values)
        torch.testing.assert_close(p["rm"], ref_bn.running_mean)
        torch.testing.assert_close(p["rv"], ref_bn.running_var)


def test_distributed_data_parallel_step(two_process_results):
    model = make_model(sync=False)
    out = model(model_input())
    out.sum().backward()
    torch.testing.assert_close(torch.cat([res["ddp_out"] for res in two_process_results]),
                               out.detach())
    for name, p in model.named_parameters():
        for res in two_process_results:  # DDP averages: world_size * average = total
            # atol: the conv bias gradient is 0 in exact arithmetic (BN removes any per-channel
            # shift), a sum of ~300 terms of size ~1 that cancel, so only noise is compared
            torch.testing.assert_close(res["ddp"][name] * 2, p.grad, rtol=1e-4, atol=1e-4)


def test_falls_back_to_local_batch_norm_without_process_group():
    assert not dist.is_initialized()
    bn = make_bn(fastconv.nn.SyncBatchNorm, activation="relu")
    ref = make_bn(torch.nn.BatchNorm2d)
    x = torch.randn(4, C, 3, 3)
    torch.testing.assert_close(bn(x), TF.relu(ref(x)))
    bn.eval()
    ref.eval()
    torch.testing.assert_close(bn(x), TF.relu(ref(x)))
    assert "activation=relu" in repr(bn)


def test_convert_sync_batchnorm_keeps_parameters_and_activation():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, C, 1), make_bn(fastconv.nn.BatchNormReLU2d),
                                torch.nn.BatchNorm2d(C))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    converted = fastconv.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(converted[1], fastconv.nn.SyncBatchNorm)
    assert converted[1].activation == "relu" and converted[2].activation is None
    assert isinstance(converted[2], torch.nn.SyncBatchNorm)
    assert list(converted.state_dict()) == list(state)
    for k, v in converted.state_dict().items():
        torch.testing.assert_close(v, state[k])
