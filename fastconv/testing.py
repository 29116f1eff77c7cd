"""Helpers for fastconv's tests and for users testing code built on fastconv."""
import contextlib

import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

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


# ---- emulated CUDA (shared/SIMT.md) -----------------------------------------------------------
def simt_available():
    """Whether fastconv._simt (the CUDA kernels compiled against the CPU emulator) is built."""
    try:
        import fastconv._simt  # noqa: F401
    except ImportError:
        return False
    return True


def _simt_policy():
    """The emulator's current policy as emulate_cuda keyword arguments."""
    text = torch.ops.fastconv_simt._policy()  # "[simt order=.. seed=.. block_order=.. ...]"
    fields = dict(item.split("=", 1) for item in text.strip("[]").split()[1:])
    return dict(schedule=fields["order"], seed=int(fields["seed"]),
                block_order=fields["block_order"], strict=fields["strict"] == "1",
                target=fields["target"])


def _configure(schedule, seed, block_order, strict, target):
    torch.ops.fastconv_simt._configure(schedule, block_order or schedule, int(seed),
                                       bool(strict), target)


_PLAIN = (torch.Tensor, torch.nn.Parameter)


class EmulateCudaMode(TorchDispatchMode):
    """Redirects every torch.ops.fastconv.<op>.<overload> called on CPU tensors to
    torch.ops.fastconv_simt.<op>.<overload> where the emulated module has it. The mode sits
    below autograd, so the backward ops that autograd calls are redirected too; fake, meta and
    other subclass tensors (FakeTensorMode, torch.compile tracing) pass through to fastconv's
    own kernels. `redirected` counts the calls that ran emulated kernels; `not_emulated` names
    the fastconv ops that ran their own CPU kernels because fastconv_simt lacks them."""

    @classmethod
    def ignore_compile_internals(cls):
        # Off while torch.compile traces and compiles, on while the compiled code runs: the
        # graph's fastconv ops are redirected, and Dynamo does not refuse to compile.
        return True

    def __init__(self):
        super().__init__()
        self.redirected = 0
        self.not_emulated = set()
        self._targets = {}

    def _target(self, func):
        if func not in self._targets:
            target = None
            if func.namespace == "fastconv":
                packet = getattr(torch.ops.fastconv_simt, func._schema.name.split("::", 1)[1],
                                 None)
                target = getattr(packet, func._overloadname, None) if packet else None
            self._targets[func] = target
        return self._targets[func]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = self._target(func)
        if target is not None:
            tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
            # plain CPU tensors only: subclasses (fake, functional) are unwrapped by their own
            # modes and come back here as plain tensors if they ever run
            if all(type(t) in _PLAIN and t.device.type == "cpu" for t in tensors):
                self.redirected += 1
                return target(*args, **kwargs)
        elif func.namespace == "fastconv":
            self.not_emulated.add(str(func))
        return func(*args, **kwargs)


def _auto_functionalized_v2_under_emulation(mode, *args, **kwargs):
    # torch.compile / opcheck wrap mutating ops (e.g. fastconv::_batch_norm_update_stats, whose
    # running buffers are Tensor(a!)) in this higher-order op; run its dense form with the mode
    # active, so the wrapped fastconv op is redirected like any other.
    from torch._higher_order_ops.auto_functionalize import auto_functionalized_v2_dense
    with mode:
        return auto_functionalized_v2_dense(*args, **kwargs)


def _register_higher_order_rules():
    from torch._higher_order_ops.auto_functionalize import auto_functionalized_v2
    auto_functionalized_v2.py_impl(EmulateCudaMode)(_auto_functionalized_v2_under_emulation)


_register_higher_order_rules()


@contextlib.contextmanager
def emulate_cuda(schedule="forward", seed=0, block_order=None, strict=True, target="sm_80"):
    """Runs fastconv ops on CPU tensors through the emulated CUDA kernels (fastconv._simt):
    the CUDA kernel source, compiled with g++ against csrc/simt, under a scheduling policy.

    schedule: order of the threads of a block within a pass, "forward", "reverse" or
    "random" (a fresh permutation per pass, from `seed`); block_order: order of the blocks
    (default: the same as schedule); strict: a barrier reached after threads exited, or a
    shuffle reading a lane that does not take part, raises instead of warning; target: the
    emulated GPU ("sm_80" or "sm_90"), whose properties the launch plans see. Yields the
    EmulateCudaMode; the previous policy is restored on exit. Races show up as results that
    differ between schedules; broken barriers, bad warp collectives, invalid launches and
    deadlocks raise RuntimeError naming the kernel, block, thread and policy.
    """
    import fastconv._simt  # noqa: F401  (registers torch.ops.fastconv_simt)

    previous = _simt_policy()
    _configure(schedule, seed, block_order, strict, target)
    try:
        with EmulateCudaMode() as mode:
            yield mode
    finally:
        _configure(**previous)
