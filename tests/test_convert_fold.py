"""fastconv.nn.convert(fold_batchnorm=True): BatchNorm folded into the preceding convolution
in eval mode computes the same function, keeps the state_dict, follows state changes, and
unfolds in training mode."""
import copy
import io

import torch
import torchvision
from torch import nn

import fastconv.nn as fnn
from fastconv.nn import convert, fold
from model_checks import assert_close_model, assert_same_step, single_thread  # noqa: F401
from test_convert import Block

tvm = torchvision.models


def _randomize_bn(model):
    """Non-trivial BN parameters and running statistics, so folding has something to fold."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


class ConvBias(nn.Module):
    """A conv with bias before a BN; a conv whose output has a second user; a shared BN."""

    def __init__(self, c=4):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c)
        self.seq = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, groups=2), nn.BatchNorm2d(c),
                                 nn.ReLU(), nn.Conv2d(c, c, 1), nn.Sigmoid(), nn.BatchNorm2d(c))

    def forward(self, x):
        y = self.conv2(self.bn1(self.conv1(x)))
        return self.seq(self.bn2(y) + y)   # conv2's output has a second user: not folded


def test_fold_batchnorm_summary_state_and_same_function():
    torch.manual_seed(0)
    original = _randomize_bn(ConvBias())
    converted, summary = convert(original, return_summary=True, fold_batchnorm=True)
    assert summary.folded == {"conv1": "bn1", "seq.0": "seq.1"}
    assert "BatchNorm2d folded into the preceding Conv2d (eval mode): 2" in str(summary)
    assert type(converted.conv2) is fnn.Conv2d and type(converted.seq[3]) is fnn.Conv2d
    sd_o, sd_c = original.state_dict(), converted.state_dict()
    assert list(sd_o) == list(sd_c) and all(torch.equal(sd_o[k], sd_c[k]) for k in sd_o)
    x = torch.randn(2, 4, 6, 6)
    # eval: folded (gradients reach conv weight/bias and BN weight/bias through the folding);
    # train: the unfolded layers, with the running statistics updated as before
    for training in (False, True, False):
        assert_same_step(converted, original, (x,), training)
    assert type(converted.seq[1]) is fold.FoldedBatchNormReLU2d  # fused, then folded


def test_fold_batchnorm_resnet18_inference_and_cache():
    torch.manual_seed(0)
    original = _randomize_bn(tvm.resnet18(weights=None)).eval()
    converted, summary = convert(original, return_summary=True, fold_batchnorm=True)
    assert len(summary.folded) == 20  # every conv of resnet18 is followed by its BN
    assert summary.folded["layer2.0.downsample.0"] == "layer2.0.downsample.1"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        # fp32: folding rounds W * s once more; measured 1e-6 of the output's scale
        assert_close_model(converted(x), original(x), "folded resnet18")
        # the folded weights are cached for inference and follow changes of the state
        for model in (original, converted):
            model.layer1[0].bn1.running_var.mul_(3.0)
            model.layer3[1].conv2.weight.mul_(-1.0)
        assert_close_model(converted(x), original(x), "folded resnet18 after a state change")
    # a deep copy and a pickled copy keep the link between each conv and its BN
    buffer = io.BytesIO()
    torch.save(converted, buffer)
    buffer.seek(0)
    for copy_ in (copy.deepcopy(converted), torch.load(buffer, weights_only=False)):
        block = copy_.layer1[0]
        assert block.conv1._fastconv_fold.bn is block.bn1
        with torch.no_grad():
            torch.testing.assert_close(copy_(x), converted(x), rtol=0, atol=0)


def test_fold_batchnorm_compiles_fullgraph():
    torch.manual_seed(0)
    converted = convert(_randomize_bn(Block("module")), fold_batchnorm=True).eval()
    x = torch.randn(2, 4, 6, 6)
    compiled = torch.compile(converted, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), converted(x))
