"""fastconv.nn.convert: run an existing model on fastconv's kernels with one line.

    model = fastconv.nn.convert(model)                      # a converted deep copy
    model, summary = fastconv.nn.convert(model, return_summary=True)
    print(summary)

1. Conversion. Every module whose type is exactly one of torch's Conv2d, ConvTranspose2d,
   MaxPool2d, MaxUnpool2d, BatchNorm2d, SyncBatchNorm or torchvision's RoIAlign, RoIPool,
   MultiScaleRoIAlign is re-typed to its fastconv counterpart. The fastconv modules subclass
   these classes and add no state, so re-typing the instance (`module.__class__ = ...`) keeps
   every parameter, buffer, hook, attribute and name: state_dicts load unchanged. Subclasses
   of those types are left alone (their own forward may do something else) and reported.

2. Fusion (fuse=True). A BatchNorm2d whose output feeds only a ReLU, or only an addition whose
   result feeds only a ReLU (the residual block's `relu(bn(x) + shortcut)`), becomes a
   BatchNormReLU2d called as `bn(x)` or `bn(x, shortcut)`: the same function, one pass over the
   data and one saved activation instead of two. A SyncBatchNorm fuses the same way (its
   activation becomes "relu"). The fused BatchNorm keeps its name and state;
   a ReLU module no longer called anywhere becomes an Identity. Patterns are found
   - with torch.fx in the forward of every module that has a BatchNorm2d child (the children
     are leaves, so each module is traced on its own and a model that does not trace as a
     whole, like a detection model, is still fused wherever its parts trace). The module keeps
     its class (a subclass is made whose forward is the rewritten graph's code). A module is
     only rewritten when its traces in train and in eval mode are identical (a forward that
     branches on self.training would otherwise lose a branch);
   - by adjacency inside an nn.Sequential (BatchNorm2d immediately followed by ReLU).
   A BatchNorm that is shared (referenced or called more than once) is never fused.

3. Folding (fold_batchnorm=True, opt-in). A Conv2d whose output feeds only a BatchNorm2d
   (fused or not; found the same two ways) computes that BatchNorm folded into its weight and
   bias whenever the BatchNorm is in eval mode with running statistics, and the BatchNorm then
   only adds the residual / applies the ReLU: one pass less per pair at inference. Nothing is
   changed in the parameters (state_dict keys and values stay the original's; model.train()
   computes the unfolded layers again), see fastconv/nn/fold.py. Opt-in because the folded
   result differs from the unfolded one by fp32 rounding (W * s is rounded once more).
"""
import copy
import operator
import warnings
from dataclasses import dataclass, field
from typing import Dict, List

import torch
from torch import fx, nn
from torch.nn import functional as F

__all__ = ["convert", "ConversionSummary"]


# ---- what converts to what -------------------------------------------------------------------

def _conversion_table():
    """torch / torchvision module type -> fastconv type (exact types only)."""
    import fastconv.nn as fnn
    import fastconv.ops as fops
    table = {nn.Conv2d: fnn.Conv2d, nn.ConvTranspose2d: fnn.ConvTranspose2d,
             nn.MaxPool2d: fnn.MaxPool2d, nn.MaxUnpool2d: fnn.MaxUnpool2d,
             nn.BatchNorm2d: fnn.BatchNorm2d, nn.SyncBatchNorm: fnn.SyncBatchNorm}
    try:
        import torchvision.ops as tvops
    except ImportError:  # without torchvision there is nothing of it to convert
        return table
    table.update({tvops.RoIAlign: fops.RoIAlign, tvops.RoIPool: fops.RoIPool,
                  tvops.MultiScaleRoIAlign: fops.MultiScaleRoIAlign})
    return table


def _retype(module, new_type):
    """Make `module` an instance of new_type, a subclass of its type, in place."""
    module.__class__ = new_type
    if new_type.__name__ == "SyncBatchNorm":  # the one attribute its __init__ adds to torch's
        module.activation = None


def _not_convertible_reason(module, table):
    """Why a module that looks like a convertible one is left alone, or None."""
    fastconv_types = tuple(table.values())
    if isinstance(module, fastconv_types):
        return None
    for torch_type in table:
        if isinstance(module, torch_type):
            return (f"{type(module).__qualname__} subclasses {torch_type.__qualname__}; its "
                    "forward may differ, so it keeps running PyTorch")
    if type(module).__name__ == "FrozenBatchNorm2d":  # torchvision's, in detection backbones
        return "FrozenBatchNorm2d has no fastconv counterpart; it keeps running PyTorch"
    return None


# ---- summary ----------------------------------------------------------------------------------

@dataclass
class ConversionSummary:
    """What convert() did; print it for a readable report."""
    converted: Dict[str, str] = field(default_factory=dict)    # name -> "Conv2d"
    fused: Dict[str, str] = field(default_factory=dict)        # bn name -> "relu" | "add+relu"
    rewritten: List[str] = field(default_factory=list)         # modules with an fx forward
    untraced: Dict[str, str] = field(default_factory=dict)     # name -> why fx was not used
    unconverted: Dict[str, str] = field(default_factory=dict)  # name -> reason
    folded: Dict[str, str] = field(default_factory=dict)       # conv name -> BN name

    def counts(self):
        out = {}
        for kind in self.converted.values():
            out[kind] = out.get(kind, 0) + 1
        return out

    def __str__(self):
        lines = [f"fastconv.nn.convert: {len(self.converted)} modules converted"]
        lines += [f"  {kind}: {n}" for kind, n in sorted(self.counts().items())]
        relu = sum(1 for v in self.fused.values() if v == "relu")
        lines.append(f"  fused BatchNorm2d -> ReLU: {relu}, BatchNorm2d -> add -> ReLU: "
                     f"{len(self.fused) - relu}")
        if self.folded:
            lines.append(f"  BatchNorm2d folded into the preceding Conv2d (eval mode): "
                         f"{len(self.folded)}")
        if self.rewritten:
            lines.append(f"  forward rewritten from its fx graph: {len(self.rewritten)} "
                         f"modules ({', '.join(self.rewritten[:4])}"
                         f"{', ...' if len(self.rewritten) > 4 else ''})")
        for name, reason in self.untraced.items():
            lines.append(f"  not traced: {name or '(root)'}: {reason}")
        for name, reason in self.unconverted.items():
            lines.append(f"  left unconverted: {name or '(root)'}: {reason}")
        return "\n".join(lines)


# ---- fx pattern matching ----------------------------------------------------------------------

_RELU_FUNCTIONS = (torch.relu, torch.relu_, F.relu, F.relu_)
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)


class _ChildrenAreLeaves(fx.Tracer):
    """Traces one module's own forward; every submodule call stays a call_module node."""

    def is_leaf_module(self, module, qualified_name):
        return True


def _is_relu(node, root):
    """A ReLU of its first argument and nothing else (in place or not)."""
    if any(k != "inplace" for k in node.kwargs) or \
            not all(isinstance(a, bool) for a in node.args[1:]):
        return False
    if node.op == "call_module":
        return type(root.get_submodule(node.target)) is nn.ReLU
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _is_add(node):
    """A plain tensor + tensor (no alpha, no out), in place or not."""
    if node.kwargs or len(node.args) != 2 or not all(isinstance(a, fx.Node) for a in node.args):
        return False
    if node.op == "call_function":
        return node.target in _ADD_FUNCTIONS
    return node.op == "call_method" and node.target in ("add", "add_", "__add__", "__iadd__")


def _only_user(node):
    return next(iter(node.users)) if len(node.users) == 1 else None


def _kept_anyway(residual):
    """Whether the residual tensor is held for backward anyway, so that the fused
    BatchNorm -> add -> ReLU, which saves it (its backward recomputes the ReLU mask from the
    BatchNorm's input and the residual), costs no memory over add + ReLU (whose ReLU saves
    its output, which the next layer saves anyway): true for the module's input (the block
    input, which its first convolution saves) and for a tensor with other users. A residual
    made only for the addition (resnet's downsample branch: conv -> BN) would be one more
    saved activation; those sums are left to add + ReLU (measured on resnet50: the 4
    downsample blocks' residuals made it save 2% more than PyTorch)."""
    return residual.op == "placeholder" or len(residual.users) > 1


def _find_fusions(graph, root, fusable):
    """[(bn node, add node or None, relu node, residual node or None)] for every fusable
    pattern in graph.

    fusable(name) says whether the BatchNorm module at that target may be fused (the right
    type, not shared)."""
    calls = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    found, claimed = [], set()  # an add or ReLU can end only one pattern: relu(bn1(x) + bn2(y))
    for node in graph.nodes:
        if node.op != "call_module" or calls[node.target] != 1 or not fusable(node.target):
            continue
        if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
            continue
        user = _only_user(node)
        if user is None:
            continue
        if _is_relu(user, root) and user.args[0] is node:
            found.append((node, None, user, None))
            claimed.add(user)
        elif _is_add(user) and len(node.args[0].users) == 1:
            # The fused call moves to the addition's place (after the residual exists):
            # nothing may modify the BatchNorm's input in between, so it has no other user.
            relu = _only_user(user)
            other = user.args[1] if user.args[0] is node else user.args[0]
            if relu is not None and other is not node and _is_relu(relu, root) \
                    and relu.args[0] is user and user not in claimed \
                    and _kept_anyway(other):
                found.append((node, user, relu, other))
                claimed.update((user, relu))
    return found


def _trace(module):
    """The module's fx graph, or raise. Traced in train and in eval mode: a forward that reads
    self.training would bake one mode into the graph, so the two must agree."""
    modes = {m: m.training for m in module.modules()}
    try:
        graphs = []
        for training in (True, False):
            module.train(training)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                graph = _ChildrenAreLeaves().trace(module)
            graphs.append(graph)
    finally:
        for m, training in modes.items():
            m.training = training
    if graphs[0].python_code("self").src != graphs[1].python_code("self").src:
        raise RuntimeError("its forward depends on the training flag")
    return graphs[0]


_FUSED_CLASSES = {}  # (original class, source) -> subclass running that source


def _fused_class(base, source):
    """A subclass of `base` whose forward is the generated `source` (imports included); one
    class per distinct source, so e.g. all identical residual blocks share it."""
    base = getattr(base, "_fastconv_base", base)  # converting a converted model again
    key = (base, source)
    if key not in _FUSED_CLASSES:
        namespace = {}
        exec(compile(source, f"<fastconv.nn.convert: {base.__qualname__}.forward>", "exec"),
             namespace)
        _FUSED_CLASSES[key] = type(base.__name__, (base,), {
            "forward": namespace["forward"], "__module__": base.__module__,
            "__qualname__": base.__qualname__, "_fastconv_fused_source": source,
            "_fastconv_base": base,
            "__reduce_ex__": _reduce_fused,
        })
    return _FUSED_CLASSES[key]


def _reduce_fused(self, protocol):
    # Pickle (torch.save of a whole model, deepcopy) by the original class and the forward's
    # source, from which _restore_fused rebuilds the same subclass.
    cls = type(self)
    return _restore_fused, (cls._fastconv_base, cls._fastconv_fused_source), self.__dict__.copy()


def _restore_fused(base, source):
    cls = _fused_class(base, source)
    return cls.__new__(cls)


def _graph_source(graph):
    from torch.fx.graph_module import _format_import_block  # what GraphModule pickles with
    from torch.package import sys_importer
    code = graph.python_code(root_module="self")
    return _format_import_block(code.globals, sys_importer) + "\n" + code.src


def _fuse_traced(module, name, graph, fusions, summary):
    """Rewrite graph so each BatchNorm -> [add ->] ReLU is one call bn(x[, residual])."""
    for bn, add, relu, residual in fusions:
        if add is not None:
            bn.args = (bn.args[0], residual)
            add.prepend(bn)  # after the residual is computed, before the addition's users
        relu.replace_all_uses_with(bn)
        graph.erase_node(relu)
        if add is not None:
            graph.erase_node(add)
        _fuse_module(module.get_submodule(bn.target))
        summary.fused[_join(name, bn.target)] = "relu" if add is None else "add+relu"
    graph.lint()
    remaining = {n.target for n in graph.nodes if n.op == "call_module"}
    for _, _, relu, _ in fusions:  # a ReLU module no longer called becomes an Identity
        if relu.op == "call_module" and relu.target not in remaining and \
                relu.target in dict(module.named_children()):
            setattr(module, relu.target, nn.Identity())
    module.__class__ = _fused_class(type(module), _graph_source(graph))
    summary.rewritten.append(name or "(root)")


def _join(prefix, name):
    return f"{prefix}.{name}" if prefix else name


# ---- the pass ---------------------------------------------------------------------------------

def _fuse_module(bn):
    """Make a BatchNorm compute relu(bn(x) [+ residual]); both classes take the residual."""
    import fastconv.nn as fnn
    if type(bn) is fnn.SyncBatchNorm:
        bn.activation = "relu"
    else:
        _retype(bn, fnn.BatchNormReLU2d)


def _fuse(model, summary):
    import fastconv.nn as fnn
    references = {}
    for _, m in model.named_modules(remove_duplicate=False):
        references[id(m)] = references.get(id(m), 0) + 1

    def fusable_module(m):
        unfused = type(m) is fnn.BatchNorm2d or \
            (type(m) is fnn.SyncBatchNorm and m.activation is None)
        return unfused and references[id(m)] == 1

    for name, module in list(model.named_modules()):
        children = dict(module.named_children())
        if not any(fusable_module(c) for c in children.values()):
            continue
        if type(module).forward is nn.Sequential.forward:
            _fuse_sequential(module, name, summary, fusable_module)
            continue
        try:
            graph = _trace(module)
        except Exception as e:  # noqa: BLE001  any failure to trace means: leave it alone
            summary.untraced[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
            continue
        fusions = _find_fusions(graph, module,
                                lambda t: fusable_module(module.get_submodule(t)))
        if fusions:
            _fuse_traced(module, name, graph, fusions, summary)


def _fuse_sequential(seq, name, summary, fusable_module):
    keys = list(seq._modules)
    for key, next_key in zip(keys, keys[1:]):
        bn, follower = seq._modules[key], seq._modules[next_key]
        if fusable_module(bn) and type(follower) is nn.ReLU:
            _fuse_module(bn)
            seq._modules[next_key] = nn.Identity()
            summary.fused[_join(name, key)] = "relu"


def _single_use_modules(model):
    """id -> module for modules referenced exactly once in the model (not shared)."""
    references = {}
    for _, m in model.named_modules(remove_duplicate=False):
        references[id(m)] = references.get(id(m), 0) + 1
    return {i for i, n in references.items() if n == 1}


def _fold(model, summary):
    from fastconv.nn import fold
    single = _single_use_modules(model)

    def pair(conv, bn):
        return id(conv) in single and id(bn) in single and fold.can_fold(conv, bn)

    for name, module in list(model.named_modules()):
        children = dict(module.named_children())
        if not any(type(c) is fold.Conv2d for c in children.values()):
            continue
        if type(module).forward is nn.Sequential.forward:
            keys = list(module._modules)
            pairs = [(k, n) for k, n in zip(keys, keys[1:])
                     if pair(module._modules[k], module._modules[n])]
        else:
            try:
                graph = _trace(module)
            except Exception:  # noqa: BLE001  reported by the fusion pass where it matters
                continue
            pairs = _conv_bn_pairs(graph, lambda c, b: pair(module.get_submodule(c),
                                                            module.get_submodule(b)))
        for conv_name, bn_name in pairs:
            fold.fold(module.get_submodule(conv_name), module.get_submodule(bn_name))
            summary.folded[_join(name, conv_name)] = _join(name, bn_name)


def _conv_bn_pairs(graph, fits):
    """[(conv target, bn target)] where a module call's only user is a BatchNorm module call
    taking it as its input, both called once in the graph."""
    calls = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        user = _only_user(node) if node.op == "call_module" else None
        if user is None or user.op != "call_module" or not user.args or \
                user.args[0] is not node or node in user.args[1:] or user.kwargs:
            continue
        if calls[node.target] == 1 and calls[user.target] == 1 and \
                len(node.args) == 1 and not node.kwargs and fits(node.target, user.target):
            pairs.append((node.target, user.target))
    return pairs


def convert(model: nn.Module, *, fuse: bool = True, inplace: bool = False,
            return_summary: bool = False, fold_batchnorm: bool = False):
    """Replace torch.nn / torchvision layers of `model` by fastconv's (see the module doc).

    Returns the converted model (a deep copy unless inplace=True), or (model, summary) with
    return_summary=True. fold_batchnorm=True also folds each BatchNorm into the convolution
    before it while that BatchNorm is in eval mode (section 3 of the module doc). Warns about modules that look convertible but are left alone.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fastconv.nn.convert: expected an nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    table = _conversion_table()
    summary = ConversionSummary()
    for name, module in model.named_modules():
        new_type = table.get(type(module))
        if new_type is not None:
            summary.converted[name] = type(module).__name__
            _retype(module, new_type)
            continue
        reason = _not_convertible_reason(module, table)
        if reason:
            summary.unconverted[name] = reason
    if fuse:
        _fuse(model, summary)
    if fold_batchnorm:
        _fold(model, summary)
    if summary.unconverted:
        listed = "; ".join(f"{n or '(root)'}: {r}" for n, r in summary.unconverted.items())
        warnings.warn(f"fastconv.nn.convert: {len(summary.unconverted)} modules left "
                      f"unconverted: {listed}", stacklevel=2)
    return (model, summary) if return_summary else model
