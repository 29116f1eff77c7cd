"""Model-level benchmark cases: a whole torchvision network, converted by fastconv.nn.convert,
against the same network in torch.nn (layers.json op `model`).

Passes, both sides on the same input tensor in the memory format under test (the models are
moved to it with `model.to(memory_format=...)`, as a user would):
- train: one training step's compute, forward in train mode + backward of a fixed random
  projection of the output (parameter gradients reset to None first, as zero_grad does);
- infer: forward in eval mode under torch.no_grad().
FLOPs are the convolutions' and linear layers' 2*MACs of a forward (counted by forward hooks),
times 3 for the training step (forward, input gradient, weight gradient). The activation
memory of the training step is measured as the bytes autograd saves for backward
(torch.autograd.graph.saved_tensors_hooks, each storage counted once, parameters excluded):
fused BatchNorm+ReLU saves one tensor where BatchNorm and ReLU save two. It is reported under
the table (Case.extra).
"""
import copy

import torch

from .cases import Case, CaseBuilder, compare, make_input, Pass, register


def forward_flops(model, x):
    """2 * multiply-accumulates of the Conv2d and Linear layers in one forward of x."""
    total = [0]

    def conv_hook(m, inputs, out):
        k = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]  # C/groups * R * S
        total[0] += 2 * out.numel() * k

    def linear_hook(m, inputs, out):
        total[0] += 2 * out.numel() * m.in_features

    hooks = [m.register_forward_hook(conv_hook if isinstance(m, torch.nn.Conv2d) else linear_hook)
             for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return total[0]


def saved_activation_bytes(step, params):
    """Bytes of the distinct storages autograd saves for backward during step(), parameters
    excluded (they exist anyway): the activation memory a training step holds at its peak."""
    param_storages = {p.untyped_storage().data_ptr() for p in params}
    seen = {}

    def pack(t):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in param_storages:
            seen[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


def _train_step(model, x, grad):
    def run():
        model.zero_grad(set_to_none=True)
        out = model(x)
        out.backward(grad)
        return out
    return run


@register
class Model(CaseBuilder):
    op = "model"
    fastconv_name = "fastconv.nn:convert"
    bound = "compute"

    @classmethod
    def describe(cls, entry, n):
        return f"{entry['arch']} {n}x{entry['c']}x{entry['h']}x{entry['w']}"

    def build(self, entry, *, dtype, device, memory_format):
        import torchvision
        convert = self.fastconv_fn()
        n = self.batch(entry, device)
        fmt = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
        reference = getattr(torchvision.models, entry["arch"])(weights=None)
        reference = reference.to(device=device, dtype=dtype, memory_format=fmt)
        converted = convert(reference)
        models = {"torch": {"train": reference, "infer": copy.deepcopy(reference).eval()},
                  "fastconv": {"train": converted, "infer": copy.deepcopy(converted).eval()}}
        x = make_input((n, entry["c"], entry["h"], entry["w"]), dtype, device, memory_format)
        with torch.no_grad():
            grad = torch.randn_like(reference(x))
        flops = forward_flops(models["torch"]["infer"], x)
        steps = {side: _train_step(m["train"], x, grad) for side, m in models.items()}

        def infer(side):
            def run():
                with torch.no_grad():
                    return models[side]["infer"](x)
            return run

        def check():
            # The same function: eval outputs and, after one training step from the same
            # state, the gradients of the first convolution (every layer's error reaches it)
            # and of the classifier. Tolerance: see tests/model_checks.py (sum order through
            # ~50 layers); 1e-4 of each tensor's largest magnitude.
            fails = []
            ref_out = infer("torch")()
            tol = 1e-4 * ref_out.abs().max().item()
            fails += compare("eval output", infer("fastconv")(), ref_out, rtol=1e-4, atol=tol)
            for side in ("fastconv", "torch"):  # identical state going in
                models[side]["train"].load_state_dict(models["torch"]["infer"].state_dict())
            grads = {}
            for side in ("fastconv", "torch"):
                steps[side]()
                grads[side] = {name: p.grad.clone() for name, p in
                               models[side]["train"].named_parameters()
                               if name in ("conv1.weight", "fc.weight")}
            for name, g in grads["torch"].items():
                # relative 2-norm error. A sanity check, not the equivalence test (that is
                # tests/test_convert.py, in fp64 at 1e-10): in fp32 a ReLU input within
                # rounding of zero goes the other way in one of the two implementations and
                # train-mode BN spreads that element's change over its channel; measured up to
                # 5.1e-2 on resnet50 (tests/model_checks.TOLERANCE), while a wrong layer
                # changes the gradient by O(1).
                err = (grads["fastconv"][name] - g).norm() / g.norm()
                if not err <= 5e-2:
                    fails.append(f"gradient of {name}: relative 2-norm error {err:.3g} > 5e-2")
            return fails

        params = list(reference.parameters()) + list(converted.parameters())
        saved = {side: saved_activation_bytes(steps[side], params) for side in steps}
        return Case(
            entry=entry, op=self.op, shape=self.describe(entry, n), batch=n,
            memory_format=memory_format, dtype=dtype, device=device, bound=self.bound,
            passes=[Pass("train", steps["fastconv"], steps["torch"], 0, 3 * flops),
                    Pass("infer", infer("fastconv"), infer("torch"), 0, flops)],
            check=check,
            working_set_bytes=saved["torch"],
            extra={"saved_bytes_fastconv": saved["fastconv"], "saved_bytes_torch": saved["torch"]},
        )
