"""Helpers shared by the model-level tests (test_convert.py, test_models.py): run two models
on the same input and compare what a training step sees."""
import copy

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """Whole models at 1 thread (imported by each model test module, autouse there): on a
    shared 2-core CI machine, PyTorch's and fastconv's thread pools oversubscribe the cores
    and a model step took 15-40x longer at 2 threads than at 1. Threading is tested per op."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Tolerances by dtype, as fractions of the reference's scale (outputs, buffers: of the
# tensor's largest magnitude; gradients: relative 2-norm error).
#
# float64 (the whole-network equivalence tests): fp64's unit roundoff is 1.1e-16. The worst
# growth measured through these networks is train-mode BatchNorm over 8 values per channel in
# resnet's last stage plus ~50 layers of summation-order differences: outputs within 2e-14,
# gradients within 4e-14 of each other (resnet18/vgg11_bn and the Bottleneck networks below;
# 6e-10 only when BN sees 3 values per channel, which the test shapes avoid). 1e-10 leaves a
# factor >1000 for other summation orders and is 1e8 below what a real error changes (one
# wrong tap, ReLU mask or BN term moves a gradient by >= 1e-3 of its norm).
#
# float32 (small networks only): fastconv's kernels sum in another order than PyTorch's
# (oneDNN), so each layer differs in the last bits (1.2e-7); measured differences are 1e-6 to
# 4e-6. 1e-4 is 25x above that. Deep networks are not compared in fp32: a ReLU whose input is
# within rounding of zero (|pre-activation| ~ 4e-8) goes the other way in one of the two
# implementations, which moves that element's whole gradient (measured: vgg11_bn, one flipped
# ReLU after features.9 changes the first layers' weight gradients by 0.8%; PyTorch's own fp32
# result was the one 0.8% away from the fp64 result there); train-mode BatchNorm over few values
# then spreads it over the channel (resnet50: 1e-2 to 5e-2). That is fp32 conditioning, not a
# difference of function, and fp64 removes it.
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}


def model_tolerance(reference):
    """rtol/atol for comparing a model output or buffer with PyTorch's, relative to the
    reference tensor's largest magnitude (see TOLERANCE)."""
    tol = TOLERANCE[reference.dtype] if reference.dtype in TOLERANCE else 1e-4
    scale = reference.detach().abs().max().item() if reference.numel() else 1.0
    return dict(rtol=tol, atol=tol * max(scale, 1e-6))


def assert_close_model(actual, expected, what):
    torch.testing.assert_close(actual, expected, **model_tolerance(expected),
                               msg=lambda m: f"{what}: {m}")


def assert_close_gradient(actual, expected, what, floor):
    """Relative error in the 2-norm, for parameter gradients of whole networks (TOLERANCE).

    Elementwise comparison would also flag the rare max-pool window whose two largest values
    tie to the last bit (the gradient goes to another element), which leaves the gradient as a
    whole unchanged; a real error (a wrong tap, ReLU mask or BN term) changes the whole
    gradient. `floor` is the absolute error allowed for gradients that are zero in exact
    arithmetic (a conv bias right before BatchNorm): TOLERANCE times the largest gradient
    norm of the network, so their rounding noise passes and nothing else does."""
    tol = TOLERANCE[expected.dtype]
    err = (actual.double() - expected.double()).norm().item()
    ref = expected.double().norm().item()
    assert err <= tol * ref + floor, \
        f"{what}: relative 2-norm error {err / max(ref, 1e-30):.3g} > {tol} (norm {ref:.3g})"


def first_tensor(out):
    """The tensor output of a model (torchvision segmentation models return a dict)."""
    if isinstance(out, dict):
        return out["out"]
    if isinstance(out, (tuple, list)):
        return torch.cat([o.flatten() for o in out])
    return out


def run_step(model, inputs, seed=0):
    """Forward (under a fixed RNG state, for dropout), then backward of a fixed random
    projection of the output; returns (output, {name: grad}, {name: buffer})."""
    torch.manual_seed(seed)
    out = first_tensor(model(*inputs))
    torch.manual_seed(seed + 1)
    weight = torch.randn_like(out)
    if any(p.requires_grad for p in model.parameters()):
        model.zero_grad(set_to_none=True)
        (out * weight).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    return out.detach(), grads, buffers


def cast(inputs, dtype):
    """inputs with every floating-point tensor (in dicts, lists, tuples) cast to dtype."""
    if isinstance(inputs, torch.Tensor):
        if not inputs.is_floating_point():
            return inputs
        return inputs.detach().to(dtype).requires_grad_(inputs.requires_grad)
    if isinstance(inputs, dict):
        return {k: cast(v, dtype) for k, v in inputs.items()}
    if isinstance(inputs, (list, tuple)):
        return type(inputs)(cast(v, dtype) for v in inputs)
    return inputs


def assert_same_step(converted, original, inputs, training, dtype=torch.float64):
    """Output, every parameter gradient and every buffer (BN running statistics) after one
    step agree between two models that start from the same state. The models are cast to
    `dtype` in place and run on inputs cast to it (see TOLERANCE for why fp64 by default)."""
    converted.to(dtype).train(training)
    original.to(dtype).train(training)
    inputs = cast(inputs, dtype)
    out_c, grads_c, bufs_c = run_step(converted, copy.deepcopy(inputs))
    out_o, grads_o, bufs_o = run_step(original, copy.deepcopy(inputs))
    assert_close_model(out_c, out_o, "output")
    assert grads_c.keys() == grads_o.keys() and len(grads_o) > 0
    floor = TOLERANCE[dtype] * max(g.double().norm().item() for g in grads_o.values())
    for name in grads_o:
        assert_close_gradient(grads_c[name], grads_o[name], f"gradient of {name}", floor)
    assert bufs_c.keys() == bufs_o.keys()
    for name in bufs_o:
        assert_close_model(bufs_c[name].double(), bufs_o[name].double(), f"buffer {name}")
