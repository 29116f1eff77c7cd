"""fastconv.nn.convert: converted torchvision models compute the same function (outputs,
parameter gradients, running statistics, in train and eval mode), keep their state_dict, and
fuse exactly the BatchNorm -> [add ->] ReLU patterns that provably compute the same thing."""
import copy
import io
import operator

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as TF

import fastconv.nn as fnn
import fastconv.ops as fops
from fastconv.nn import convert
from model_checks import assert_close_model, assert_same_step, single_thread  # noqa: F401

tvm = torchvision.models

FASTCONV_TYPES = (fnn.Conv2d, fnn.ConvTranspose2d, fnn.MaxPool2d, fnn.MaxUnpool2d,
                  fnn.BatchNorm2d, fnn.SyncBatchNorm, fops.RoIAlign, fops.RoIPool,
                  fops.MultiScaleRoIAlign)
TORCH_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.MaxUnpool2d, nn.BatchNorm2d,
               nn.SyncBatchNorm, torchvision.ops.RoIAlign, torchvision.ops.RoIPool,
               torchvision.ops.MultiScaleRoIAlign)


def vgg11_bn():
    model = tvm.vgg11_bn(weights=None)
    # torchvision's classifier is three Linear layers (120 M parameters, 0.5 GB) that convert
    # leaves alone; a small one keeps the test about the convolutional part.
    model.classifier = nn.Linear(512 * 7 * 7, 10)
    return model


# name -> (builder, input shape, converted modules by torch type, fused relu, fused add+relu)
# (add+relu: the blocks without downsample; see convert._kept_anyway)
TORCHVISION = {
    "resnet18": (lambda: tvm.resnet18(weights=None), (2, 3, 64, 64),
                 dict(Conv2d=20, BatchNorm2d=20, MaxPool2d=1), 9, 5),
    "resnet50": (lambda: tvm.resnet50(weights=None), (2, 3, 64, 64),
                 dict(Conv2d=53, BatchNorm2d=53, MaxPool2d=1), 33, 12),
    "resnext50_32x4d": (lambda: tvm.resnext50_32x4d(weights=None), (2, 3, 48, 48),
                        dict(Conv2d=53, BatchNorm2d=53, MaxPool2d=1), 33, 12),
    "vgg11_bn": (vgg11_bn, (2, 3, 32, 32), dict(Conv2d=8, BatchNorm2d=8, MaxPool2d=5), 8, 0),
    # backbone 53 + head 3x3 conv and BN, 1x1 conv; the head's BN -> ReLU fuses by adjacency
    "fcn_resnet50": (lambda: torchvision.models.segmentation.fcn_resnet50(
        weights=None, weights_backbone=None, num_classes=5), (1, 3, 48, 48),
        dict(Conv2d=55, BatchNorm2d=54, MaxPool2d=1), 34, 12),
}


@pytest.fixture(scope="module")
def converted_models():
    """name -> (original, converted deep copy, summary), built once for the module."""
    built = {}
    for name, (build, *_rest) in TORCHVISION.items():
        torch.manual_seed(0)
        original = build()
        converted, summary = convert(original, return_summary=True)
        built[name] = (original, converted, summary)
    return built


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_torchvision_model_conversion_summary_and_state(converted_models, name):
    original, converted, summary = converted_models[name]
    _, _, counts, relu, add_relu = TORCHVISION[name]
    assert summary.counts() == counts
    fused = list(summary.fused.values())
    assert (fused.count("relu"), fused.count("add+relu")) == (relu, add_relu)
    assert not summary.unconverted
    # the original is untouched (convert works on a deep copy by default)
    assert not any(isinstance(m, FASTCONV_TYPES) for m in original.modules())
    # no torch layer left that fastconv has (exact types: fastconv's subclass torch's)
    assert not any(type(m) in TORCH_TYPES for m in converted.modules())
    # fused BatchNorms are BatchNormReLU2d under their own names
    for bn in summary.fused:
        assert type(converted.get_submodule(bn)) is fnn.BatchNormReLU2d
    # same state_dict: keys in order, values bit-identical, and it loads strictly both ways
    sd_o, sd_c = original.state_dict(), converted.state_dict()
    assert list(sd_o) == list(sd_c)
    assert all(torch.equal(sd_o[k], sd_c[k]) for k in sd_o)
    converted.load_state_dict(sd_o, strict=True)
    # the original's classes are kept (isinstance, attributes, methods)
    assert isinstance(converted, type(original))
    printed = str(summary)
    assert f"fused BatchNorm2d -> ReLU: {relu}, BatchNorm2d -> add -> ReLU: {add_relu}" in printed


def _bottleneck_resnet(**kwargs):
    """torchvision's ResNet with resnet50's blocks (Bottleneck: stem, downsample and identity
    blocks, all fusion patterns) at a third of the depth, for fp64 training steps."""
    return tvm.resnet.ResNet(tvm.resnet.Bottleneck, [2, 1, 1, 1], **kwargs)


def _bottleneck_fcn():
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.models.segmentation.fcn import FCN, FCNHead
    backbone = _bottleneck_resnet(replace_stride_with_dilation=[False, True, True])
    return FCN(IntermediateLayerGetter(backbone, {"layer4": "out"}), FCNHead(2048, 5))


# Equivalence of one step in fp64 (see tests/model_checks.TOLERANCE: fp32 comparisons of deep
# networks are decided by ReLU inputs within rounding of zero). Whole networks in eval mode;
# in train mode the deep ones with the same blocks at a third of the depth (an fp64 training
# step of resnet50 on fastconv's generic fp64 kernels takes ~40 s on this machine). Shapes
# keep >= 8 values per channel in every train-mode BatchNorm (2x2 maps at batch 2; 4x4 at
# batch 1 with dilation): over fewer, BN amplifies rounding 1e4-fold and more.
EQUIVALENCE = {
    "resnet18": (TORCHVISION["resnet18"][0], {"train": (2, 3, 64, 64), "eval": (1, 3, 32, 32)}),
    "vgg11_bn": (vgg11_bn, {"train": (2, 3, 32, 32), "eval": (1, 3, 32, 32)}),
    "resnet50": (TORCHVISION["resnet50"][0], {"eval": (1, 3, 32, 32)}),
    "resnext50_32x4d": (TORCHVISION["resnext50_32x4d"][0], {"eval": (1, 3, 32, 32)}),
    "fcn_resnet50": (TORCHVISION["fcn_resnet50"][0], {"eval": (1, 3, 16, 16)}),
    "resnet50_blocks": (_bottleneck_resnet, {"train": (2, 3, 48, 48)}),
    "resnext50_blocks": (lambda: _bottleneck_resnet(groups=32, width_per_group=4),
                         {"train": (2, 3, 48, 48)}),
    "fcn_resnet50_blocks": (_bottleneck_fcn, {"train": (1, 3, 32, 32)}),
}


@pytest.mark.parametrize("name, mode", [(name, mode) for name, (_, shapes) in EQUIVALENCE.items()
                                        for mode in shapes])
def test_torchvision_model_same_outputs_and_gradients(name, mode):
    build, shapes = EQUIVALENCE[name]
    torch.manual_seed(0)
    original = build()
    converted, summary = convert(original, return_summary=True)
    assert summary.fused and not summary.unconverted
    x = torch.randn(shapes[mode])
    assert_same_step(converted, original, (x,), mode == "train")


class BoxHead(nn.Module):
    """Faster R-CNN's box branch as torchvision builds it (roi_heads.box_roi_pool, box_head,
    box_predictor) on a two-level feature pyramid."""

    def __init__(self, channels=8, classes=5):
        super().__init__()
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
        self.box_roi_pool = torchvision.ops.MultiScaleRoIAlign(["p2", "p3"], 7, 2)
        self.box_head = TwoMLPHead(channels * 49, 32)
        self.box_predictor = FastRCNNPredictor(32, classes)

    def forward(self, features, proposals, image_shapes):
        x = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        return self.box_predictor(x)


def box_head_inputs(channels=8):
    image = (256, 256)
    features = {"p2": torch.randn(2, channels, 64, 64), "p3": torch.randn(2, channels, 32, 32),
                "unused": torch.randn(2, channels, 16, 16)}
    boxes = []
    for count in (6, 5):
        # LevelMapper sends boxes of side >= 112 px to p3 and smaller ones to p2: some of each
        small, large = count // 2, count - count // 2
        xy = torch.cat([torch.rand(small, 2) * 200, torch.rand(large, 2) * 100])
        wh = torch.cat([torch.rand(small, 2) * 32 + 8, torch.rand(large, 2) * 30 + 120])
        boxes.append(torch.cat([xy, (xy + wh).clamp(max=255.0)], 1))
    return features, boxes, [image, image]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_faster_rcnn_box_head_with_multiscale_roi_align(training):
    original = BoxHead()
    converted, summary = convert(original, return_summary=True)
    assert type(converted.box_roi_pool) is fops.MultiScaleRoIAlign
    assert summary.converted == {"box_roi_pool": "MultiScaleRoIAlign"}
    features, boxes, shapes = box_head_inputs()
    levels = torchvision.ops.poolers.LevelMapper(2, 3)(boxes)
    assert set(levels.tolist()) == {0, 1}  # both levels are exercised
    for f in features.values():
        f.requires_grad_()
    assert_same_step(converted, original, (features, boxes, shapes), training)


def test_multiscale_roi_align_feature_gradients_match_torchvision():
    features, boxes, shapes = box_head_inputs()
    ours = fops.MultiScaleRoIAlign(["p2", "p3"], 7, 2)
    ref = torchvision.ops.MultiScaleRoIAlign(["p2", "p3"], 7, 2)
    assert repr(ours) == repr(ref)
    grads = []
    for pooler in (ours, ref):
        inputs = {k: v.clone().requires_grad_() for k, v in features.items()}
        out = pooler(inputs, boxes, shapes)
        out.pow(2).sum().backward()
        grads.append((out.detach(), inputs["p2"].grad, inputs["p3"].grad, inputs["unused"].grad))
    for a, b in zip(grads[0][:3], grads[1][:3]):
        assert_close_model(a, b, "MultiScaleRoIAlign")
    assert grads[0][3] is None and grads[1][3] is None


def test_torchvision_faster_rcnn_converts_and_keeps_working():
    # A whole detection model does not trace with torch.fx (data-dependent control flow):
    # its parts are converted and fused where they trace or are Sequential.
    torch.manual_seed(0)
    original = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=64, max_size=64,
        rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20, box_detections_per_img=10,
        box_score_thresh=0.0).eval()
    converted, summary = convert(original, return_summary=True)
    assert type(converted.roi_heads.box_roi_pool) is fops.MultiScaleRoIAlign
    # ResNet-50 body: the stem BN -> ReLU, 16 blocks x 2 BN -> ReLU, and BN -> add -> ReLU in
    # the 12 blocks without downsample
    assert len(summary.fused) == 45 and not summary.unconverted
    x = torch.rand(1, 3, 64, 64)
    # Compare the deterministic parts (NMS and top-k of the full model reorder near-ties):
    # the FPN features, and the box branch on fixed proposals.
    with torch.no_grad():
        ours, ref = converted.backbone(x), original.backbone(x)
        assert ours.keys() == ref.keys()
        for level in ref:
            assert_close_model(ours[level], ref[level], f"FPN level {level}")
        proposals = [torch.tensor([[2.0, 3.0, 40.0, 30.0], [10.0, 12.0, 63.0, 60.0],
                                   [0.0, 0.0, 12.0, 9.0]])]
        outs = []
        for model, feats in ((converted, ours), (original, ref)):
            heads = model.roi_heads
            pooled = heads.box_roi_pool(feats, proposals, [(64, 64)])
            outs.append(heads.box_predictor(heads.box_head(pooled)))
        for a, b in zip(*outs):
            assert_close_model(a, b, "box branch")
        detections = converted([x[0]])[0]
    assert set(detections) == {"boxes", "scores", "labels"} and len(detections["boxes"]) > 0


# ---- fusion rules on small models -------------------------------------------------------------

class Block(nn.Module):
    """A residual block written in the ways fx records additions and ReLUs."""

    def __init__(self, style, c=4):
        super().__init__()
        self.style = style
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.bn1(self.conv1(x))
        if self.style == "module":
            out = self.relu(out)
            out = self.bn2(self.conv2(out))
            out += x
            return self.relu(out)
        if self.style == "functional":
            out = TF.relu(out, inplace=True)
            return torch.relu(x + self.bn2(self.conv2(out)))  # residual first
        out = out.relu_()
        return torch.add(self.bn2(self.conv2(out)), x).relu()


@pytest.mark.parametrize("style", ["module", "functional", "method"])
def test_residual_block_fusions_in_every_spelling(style):
    original = Block(style)
    converted, summary = convert(original, return_summary=True)
    assert summary.fused == {"bn1": "relu", "bn2": "add+relu"}
    assert summary.rewritten == ["(root)"]
    # the ReLU module is called only in the "module" spelling; otherwise it stays unused
    assert type(converted.relu) is (nn.Identity if style == "module" else nn.ReLU)
    x = torch.randn(2, 4, 6, 6)
    for training in (True, False):
        assert_same_step(converted, original, (x,), training)


def test_residual_made_for_the_addition_alone_is_not_fused():
    # A downsample shortcut would be saved only for the fused backward: add + ReLU instead
    downsample = nn.Sequential(nn.Conv2d(4, 8, 1, stride=2, bias=False), nn.BatchNorm2d(8))
    original = tvm.resnet.BasicBlock(4, 8, stride=2, downsample=downsample)
    converted, summary = convert(original, return_summary=True)
    assert summary.fused == {"bn1": "relu"}
    x = torch.randn(2, 4, 6, 6)
    for training in (True, False):
        assert_same_step(converted, original, (x,), training)


@pytest.mark.parametrize("build", [lambda: tvm.resnet.ResNet(tvm.resnet.Bottleneck, [2, 1, 1, 1]),
                                   lambda: tvm.resnet18(weights=None)],
                         ids=["bottleneck_resnet", "resnet18"])
def test_converted_resnet_saves_less_for_backward_than_torch(build):
    from fastconv.bench.cases_models import saved_activation_bytes
    torch.manual_seed(0)
    original = build()
    converted = convert(original)
    x = torch.randn(2, 3, 64, 64)
    params = list(original.parameters()) + list(converted.parameters())
    saved = [saved_activation_bytes(lambda m=m: m(x), params) for m in (converted, original)]
    # fused BN+ReLU saves one tensor where BN and ReLU save two; the rest is the same
    # (measured: 0.84x for resnet18, 0.94x for resnet50)
    assert saved[0] < 0.97 * saved[1]


class NotFusable(nn.Module):
    def __init__(self, c=3):
        super().__init__()
        self.bn1, self.bn2, self.bn3 = nn.BatchNorm2d(c), nn.BatchNorm2d(c), nn.BatchNorm2d(c)
        self.shared = nn.BatchNorm2d(c)

    def forward(self, x):
        a = self.bn1(x)
        y = torch.relu(a) + a                   # the BN output has a second user
        s = self.bn2(x) + x
        z = torch.relu(s) * s                   # the sum has a second user
        w = torch.sigmoid(self.bn3(x))          # not a ReLU
        v = torch.relu(self.shared(x)) + self.shared(y)  # called twice
        return y + z + w + v


def test_patterns_that_change_the_function_are_not_fused():
    original = NotFusable()
    converted, summary = convert(original, return_summary=True)
    assert summary.fused == {} and summary.rewritten == []
    assert all(type(m) is fnn.BatchNorm2d for m in converted.children())
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    for training in (True, False):
        assert_same_step(converted, original, (x,), training)


def test_shared_batchnorm_instance_is_not_fused():
    bn = nn.BatchNorm2d(3)
    original = nn.Sequential(nn.Sequential(bn, nn.ReLU()), nn.Sequential(bn, nn.Sigmoid()))
    converted, summary = convert(original, return_summary=True)
    assert summary.fused == {}
    assert type(converted[0][0]) is fnn.BatchNorm2d and type(converted[0][1]) is nn.ReLU


def test_sequential_adjacency_and_identity():
    original = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                             nn.BatchNorm2d(4), nn.Sigmoid(), nn.BatchNorm2d(4), nn.ReLU())
    converted, summary = convert(original, return_summary=True)
    assert summary.fused == {"1": "relu", "5": "relu"} and summary.rewritten == []
    assert [type(m) for m in converted] == [fnn.Conv2d, fnn.BatchNormReLU2d, nn.Identity,
                                            fnn.BatchNorm2d, nn.Sigmoid, fnn.BatchNormReLU2d,
                                            nn.Identity]
    x = torch.randn(2, 3, 7, 7)
    for training in (True, False):
        assert_same_step(converted, original, (x,), training)


class ModeDependent(nn.Module):
    """A forward that branches on self.training: tracing would keep only one branch."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        y = torch.relu(self.bn(x))
        return y * 2 if self.training else y - 1


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.body = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3), nn.ReLU())

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow
            return self.body(torch.relu(self.bn(x)))
        return self.body(x)


@pytest.mark.parametrize("cls", [ModeDependent, Untraceable])
def test_modules_fx_cannot_rewrite_keep_their_forward(cls):
    original = cls()
    converted, summary = convert(original, return_summary=True)
    assert "" in summary.untraced and summary.rewritten == []
    assert type(converted) is cls and "bn" not in summary.fused
    if cls is Untraceable:  # its Sequential child still fuses by adjacency
        assert summary.fused == {"body.1": "relu"}
    x = torch.randn(2, 3, 4, 4).abs()
    for training in (True, False):
        assert_same_step(converted, original, (x,), training)
        assert_same_step(converted, original, (-x,), training)


class MyConv(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 2


def test_subclasses_are_left_alone_with_a_warning():
    original = nn.Sequential(MyConv(3, 3, 1), nn.Conv2d(3, 3, 1))
    with pytest.warns(UserWarning, match=r"fastconv.nn.convert: 1 modules left unconverted: "
                                         r"0: MyConv subclasses Conv2d"):
        converted, summary = convert(original, return_summary=True)
    assert type(converted[0]) is MyConv and type(converted[1]) is fnn.Conv2d
    x = torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(converted(x), original(x))


def test_inplace_and_root_module_and_errors():
    conv = nn.Conv2d(3, 4, 3)
    assert convert(conv, inplace=True) is conv and type(conv) is fnn.Conv2d
    bn = nn.BatchNorm2d(4)
    assert type(convert(bn)) is fnn.BatchNorm2d and type(bn) is nn.BatchNorm2d
    with pytest.raises(TypeError, match="fastconv.nn.convert: expected an nn.Module, got int"):
        convert(3)


def test_encoder_decoder_layers_and_roi_modules():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.pool = nn.MaxPool2d(2, return_indices=True)
            self.unpool = nn.MaxUnpool2d(2)
            self.up = nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1)
            self.align = torchvision.ops.RoIAlign(3, 0.5, 2, aligned=True)
            self.roipool = torchvision.ops.RoIPool((2, 3), 0.5)

        def forward(self, x, rois):
            y, idx = self.pool(self.conv(x))
            z = self.up(self.unpool(y, idx, output_size=x.shape[-2:]))
            return z.sum() + self.align(z, rois).sum() + self.roipool(z, rois).sum()

    original = Net()
    converted, summary = convert(original, return_summary=True)
    assert summary.counts() == dict(Conv2d=1, MaxPool2d=1, MaxUnpool2d=1, ConvTranspose2d=1,
                                    RoIAlign=1, RoIPool=1)
    assert repr(converted.align) == repr(original.align)
    x = torch.randn(2, 3, 8, 8)
    rois = torch.tensor([[0, 1.0, 1.5, 9.0, 12.0], [1, 0.0, 2.0, 14.0, 6.5]])
    assert_same_step(converted, original, (x, rois), True)


def test_sync_batchnorm_converts_and_fuses_by_adjacency():
    original = nn.Sequential(nn.Conv2d(3, 4, 1), nn.SyncBatchNorm(4), nn.ReLU())
    converted, summary = convert(original, return_summary=True)
    assert type(converted[1]) is fnn.SyncBatchNorm and converted[1].activation == "relu"
    assert summary.fused == {"1": "relu"} and type(converted[2]) is nn.Identity
    x = torch.randn(2, 3, 4, 4)
    for training in (True, False):  # without a process group SyncBatchNorm is a local BN
        assert_same_step(converted, original, (x,), training)


def test_converted_model_survives_deepcopy_pickle_and_torch_save():
    torch.manual_seed(0)
    original = Block("module")
    converted = convert(original)
    x = torch.randn(2, 4, 6, 6)
    converted.eval()
    expected = converted(x)
    buffer = io.BytesIO()
    torch.save(converted, buffer)
    buffer.seek(0)
    for copy_ in (copy.deepcopy(converted), torch.load(buffer, weights_only=False)):
        assert type(copy_) is type(converted) and isinstance(copy_, Block)
        torch.testing.assert_close(copy_(x), expected, rtol=0, atol=0)


def test_converted_model_compiles_fullgraph():
    torch.manual_seed(0)
    converted = convert(Block("module")).eval()
    x = torch.randn(2, 4, 6, 6)
    compiled = torch.compile(converted, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), converted(x))


def test_convert_is_idempotent():
    once = convert(Block("functional"))
    twice, summary = convert(once, return_summary=True)
    assert summary.converted == {} and summary.fused == {}
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(twice(x), once(x))


def test_fx_records_in_place_addition_as_the_add_the_matcher_knows():
    # `out += identity` (torchvision's blocks): fx proxies have no __iadd__, so Python falls
    # back to __add__ and fx records operator.add. Pinned here: if fx ever recorded it
    # differently, fusion of residual blocks would silently stop happening.
    graph = torch.fx.symbolic_trace(Block("module")).graph
    targets = [n.target for n in graph.nodes if n.op in ("call_function", "call_method")]
    assert operator.add in targets and operator.iadd not in targets

