"""fastconv.models: torchvision checkpoints load with strict=True and give torchvision's
function; LeNet, FCN and the Fast R-CNN head against independent references."""
import copy

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as TF

import fastconv.models as fm
import fastconv.nn as fnn
import fastconv.ops as fops
from model_checks import assert_close_model, assert_same_step, single_thread  # noqa: F401

tvm = torchvision.models
RESNETS = ["resnet18", "resnet34", "resnet50", "resnext50_32x4d"]


def _only_fastconv_layers(model):
    """Every conv/pool/BN is fastconv's: the models are built from fastconv modules only."""
    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.BatchNorm2d)
    return all(type(m).__module__.startswith("fastconv.") for m in model.modules()
               if isinstance(m, kinds))


@pytest.mark.parametrize("name", RESNETS)
def test_torchvision_state_dict_loads_strictly(name):
    torch.manual_seed(0)
    reference = getattr(tvm, name)(weights=None, num_classes=10)
    torch.manual_seed(0)
    model = getattr(fm, name)(num_classes=10)
    assert _only_fastconv_layers(model)
    ours, theirs = model.state_dict(), reference.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in theirs)
    # Same construction and initialization order as torchvision: same seed, same weights.
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    with torch.no_grad():  # then a checkpoint that differs from our init loads all of it
        for p in reference.parameters():
            p.add_(torch.randn_like(p))
    model.load_state_dict(reference.state_dict(), strict=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in reference.state_dict().items())


# fp64 steps (tests/model_checks.TOLERANCE); ResNeXt-50's blocks (grouped Bottleneck) at a
# third of the depth (fastconv's fp64 kernels are generic, see test_convert.EQUIVALENCE), with
# >= 8 values per channel in every train-mode BatchNorm; the whole resnext50_32x4d's
# state_dict is checked above, and its conversion in test_convert.
RESNET_STEPS = [
    ("resnet18", dict(), "train", (2, 3, 64, 64)),
    ("resnet18", dict(), "eval", (1, 3, 32, 32)),
    ("ResNet", dict(block="Bottleneck", layers=[2, 1, 1, 1], groups=32, width_per_group=4),
     "train", (2, 3, 48, 48)),
]


@pytest.mark.parametrize("name, kwargs, mode, shape", RESNET_STEPS,
                         ids=[f"{s[0]}-{s[2]}" for s in RESNET_STEPS])
def test_resnet_computes_torchvisions_function(name, kwargs, mode, shape):
    if "block" in kwargs:
        block = kwargs.pop("block")
        reference = tvm.resnet.ResNet(getattr(tvm.resnet, block), num_classes=10, **kwargs)
        model = fm.ResNet(getattr(fm.resnet, block), num_classes=10, **kwargs)
    else:
        reference = getattr(tvm, name)(weights=None, num_classes=10)
        model = getattr(fm, name)(num_classes=10)
    with torch.no_grad():  # non-trivial BN state, so eval mode really uses it
        for m in reference.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    model.load_state_dict(reference.state_dict(), strict=True)
    assert_same_step(model, reference, (torch.randn(shape),), mode == "train")


def test_resnet_trunk_without_classifier():
    model = fm.resnet34(num_classes=None)
    assert not any(k.startswith(("fc.", "avgpool")) for k in model.state_dict())
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 512, 2, 2)
    dilated = fm.resnet50(num_classes=None, replace_stride_with_dilation=[False, True, True])
    assert dilated.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 2048, 8, 8)


def test_resnext_uses_grouped_convolutions():
    model = fm.resnext50_32x4d()
    conv = model.layer1[0].conv2
    assert type(conv) is fnn.Conv2d and conv.groups == 32 and conv.in_channels == 128


# ---- FCN ------------------------------------------------------------------------------------

def test_fcn_loads_torchvision_backbone_and_head():
    reference = torchvision.models.segmentation.fcn_resnet50(
        weights=None, weights_backbone=None, num_classes=4).eval()
    model = fm.fcn_resnet50(num_classes=4).eval()
    assert _only_fastconv_layers(model)
    result = model.load_state_dict(reference.state_dict(), strict=False)
    # everything but the learned upsampling (torchvision interpolates instead)
    assert result.missing_keys == ["upsample.weight"] and result.unexpected_keys == []
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        scores = model.classifier(model.backbone(x))
        expected = reference.classifier(reference.backbone(x)["out"])
        assert_close_model(scores, expected, "class scores before upsampling")
        out = model(x)
        # bilinear-initialized transposed convolution = bilinear interpolation
        # (align_corners=False) away from the border, where its zero padding differs
        bilinear = TF.interpolate(expected, scale_factor=8, mode="bilinear",
                                  align_corners=False)
    assert out.shape == (1, 4, 40, 56)
    assert_close_model(out[..., 4:-4, 4:-4], bilinear[..., 4:40 - 4, 4:56 - 4],
                       "upsampled interior")
    assert not torch.allclose(out[..., :2, :], bilinear[..., :2, :56])


def test_fcn_output_size_for_sizes_not_divisible_by_the_stride():
    model = fm.fcn_resnet50(num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 37, 50)).shape == (1, 3, 37, 50)


def test_fcn_trains_its_upsampling():
    model = fm.fcn_resnet50(num_classes=3)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert model.upsample.weight.grad is not None and model.upsample.weight.grad.abs().sum() > 0
    assert type(model.upsample) is fnn.ConvTranspose2d and model.upsample.groups == 3


def test_bilinear_kernel_matches_the_fcn_reference():
    k = fm.fcn.bilinear_kernel(4)
    taps = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(k, torch.outer(taps, taps))


# ---- Fast R-CNN --------------------------------------------------------------------------------

def _proposals():
    return [torch.tensor([[4.0, 6.0, 60.0, 50.0], [0.0, 0.0, 31.5, 20.0]]),
            torch.tensor([[10.0, 3.0, 63.0, 63.0]])]


@pytest.mark.parametrize("pooler", ["align", "pool"])
def test_fast_rcnn_matches_torchvision_ops_and_heads(pooler):
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    torch.manual_seed(0)
    model = fm.fast_rcnn_resnet18(num_classes=4, pooler=pooler, representation_size=32)
    box_head, predictor = TwoMLPHead(512 * 49, 32), FastRCNNPredictor(32, 4)
    head = model.head
    # torchvision's box head and predictor load into the head with strict=True
    head.box_head.load_state_dict(box_head.state_dict(), strict=True)
    head.box_predictor.load_state_dict(predictor.state_dict(), strict=True)
    expected_type = fops.RoIAlign if pooler == "align" else fops.RoIPool
    assert type(head.box_roi_pool) is expected_type
    images = torch.randn(2, 3, 64, 64)
    model.eval()
    features = model.backbone(images).detach().requires_grad_()
    if pooler == "align":
        pooled = torchvision.ops.roi_align(features, _proposals(), 7, 1 / 32, 2)
    else:
        pooled = torchvision.ops.roi_pool(features, _proposals(), 7, 1 / 32)
    expected = predictor(box_head(pooled))
    features2 = features.detach().requires_grad_()
    actual = head(features2, _proposals())
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        assert_close_model(a, e, "class scores / box deltas")
    sum(o.sum() for o in expected).backward()
    sum(o.sum() for o in actual).backward()
    assert_close_model(features2.grad, features.grad, "feature gradient")
    # the whole model: images in, one row per box out, gradients reach the backbone
    logits, deltas = model.train()(images, _proposals())
    assert logits.shape == (3, 4) and deltas.shape == (3, 16)
    (logits.sum() + deltas.sum()).backward()
    assert model.backbone.conv1.weight.grad.abs().sum() > 0


def test_fast_rcnn_head_with_multiscale_roi_align():
    pool = fops.MultiScaleRoIAlign(["0", "1"], 7, 2)
    head = fm.FastRCNNHead(pool, 8, num_classes=3, representation_size=16)
    features = {"0": torch.randn(2, 8, 16, 16), "1": torch.randn(2, 8, 8, 8)}
    logits, deltas = head(features, _proposals(), [(64, 64), (64, 64)])
    assert logits.shape == (3, 3) and deltas.shape == (3, 12)


def test_fast_rcnn_rejects_unknown_pooler():
    with pytest.raises(ValueError, match="expected pooler 'align' or 'pool', got 'max'"):
        fm.fast_rcnn_resnet18(pooler="max")


# ---- LeNet ---------------------------------------------------------------------------------

@pytest.mark.parametrize("image_size, features", [(28, 16 * 5 * 5), (24, 16 * 4 * 4)])
def test_lenet_shapes(image_size, features):
    model = fm.LeNet(num_classes=10, image_size=image_size)
    assert _only_fastconv_layers(model)
    assert model.classifier[0].in_features == features
    assert model(torch.randn(3, 1, image_size, image_size)).shape == (3, 10)
    with pytest.raises(ValueError, match="LeNet: expected image_size >= 12, got 11"):
        fm.LeNet(image_size=11)


def test_lenet_matches_the_same_network_in_torch_nn():
    from fastconv.examples.train_digits import as_torch_nn
    model = fm.LeNet(image_size=24)
    reference = as_torch_nn(model)
    assert not _only_fastconv_layers(reference)
    # fp32 as trained in the example: a small network, no train-mode BatchNorm, and its
    # differences are measured at ~1e-6 (model_checks.TOLERANCE)
    assert_same_step(model, reference, (torch.randn(4, 1, 24, 24),), True, torch.float32)
    assert_same_step(copy.deepcopy(model), reference, (torch.randn(4, 1, 24, 24),), False)


# ---- the benchmark's model rows ----------------------------------------------------------------

def test_benchmark_model_case_checks_and_fused_bn_saves_memory():
    from fastconv.bench import cases
    # 64x64: the last stage keeps 2x2 maps, so train-mode BN sees 8 values per channel (at
    # 32x32 it would see 2, and the gradient through it is rounding noise)
    entry = {"id": "tiny_resnet18", "op": "model", "arch": "resnet18", "n": 2, "n_cpu": 2,
             "c": 3, "h": 64, "w": 64}
    case = cases.build_case(entry)
    assert case.check() == []
    assert [p.name for p in case.passes] == ["train", "infer"]
    # 2 * MACs of resnet18 at 64x64 (1.82 G MACs at 224x224, 224 = 3.5 x 64), times the batch
    flops = case.passes[1].flops
    assert 2 * 1.7e9 / 3.5**2 < flops / 2 < 2 * 1.9e9 / 3.5**2
    assert case.passes[0].flops == 3 * flops
    saved = case.extra
    # fused BN+ReLU keeps one tensor for both: less activation memory than torch.nn
    assert 0 < saved["saved_bytes_fastconv"] < saved["saved_bytes_torch"]
    for p in case.passes:
        p.fastconv(), p.torch()
