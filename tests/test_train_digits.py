"""The training example: data, a short training run against torch.nn, and the command line."""
import pytest
import torch
from torch.nn import functional as TF

pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")

from fastconv.examples import train_digits as td  # noqa: E402
from fastconv.models import LeNet  # noqa: E402
from model_checks import assert_close_model, single_thread  # noqa: E402,F401


@pytest.fixture(scope="module")
def data():
    return td.load_digits(seed=0)


def test_digits_data(data):
    train_x, train_y, test_x, test_y = data
    assert train_x.shape == (1348, 1, 24, 24) and test_x.shape == (449, 1, 24, 24)
    assert train_x.dtype == torch.float32 and train_y.dtype == torch.int64
    # the published data set: 1797 images, about 180 of each digit
    counts = torch.bincount(torch.cat([train_y, test_y]), minlength=10)
    assert counts.sum() == 1797 and counts.min() >= 174 and counts.max() <= 183
    assert abs(train_x.mean().item()) < 1e-4 and abs(train_x.std().item() - 1) < 1e-4


def test_short_training_decreases_the_loss_and_matches_torch_nn(data):
    torch.manual_seed(0)
    model = LeNet(image_size=td.IMAGE_SIZE)
    reference = td.as_torch_nn(model)
    train_x, train_y = data[0][:256], data[1][:256]
    optimizers = [torch.optim.Adam(m.parameters(), lr=5e-3) for m in (model, reference)]
    losses = {0: [], 1: []}
    for step in range(12):
        idx = slice(32 * (step % 8), 32 * (step % 8 + 1))
        for side, (net, opt) in enumerate(zip((model, reference), optimizers)):
            loss = TF.cross_entropy(net(train_x[idx]), train_y[idx])
            opt.zero_grad()
            loss.backward()
            losses[side].append(loss.item())
            if step == 0:
                grads = [p.grad.clone() for p in net.parameters()]
                if side == 0:
                    first_grads = grads
                else:
                    for name_p, a, b in zip(dict(model.named_parameters()), first_grads, grads):
                        assert_close_model(a, b, f"gradient of {name_p} (step 0)")
            opt.step()
    assert sum(losses[0][-4:]) / 4 < 0.8 * losses[0][0]
    # after 12 optimizer steps the two runs still agree closely (same batches, same init)
    torch.testing.assert_close(torch.tensor(losses[0]), torch.tensor(losses[1]),
                               rtol=1e-3, atol=1e-4)
    for (name_p, a), b in zip(model.named_parameters(), reference.parameters()):
        assert_close_model(a.detach(), b.detach(), f"{name_p} after 12 steps")


def test_command_line_run_writes_curves_and_reports(tmp_path, capsys):
    png = tmp_path / "curves.png"
    # One epoch does not reach 97%: the run must say so and exit 1 ...
    rc = td.main(["--epochs", "1", "--out", str(png), "--no-progress"])
    out = capsys.readouterr()
    assert rc == 1 and "FAIL: test accuracy" in out.err
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    assert "max curve difference: loss" in out.out
    # ... and with a requirement it meets, exit 0 (the curves agree within the tolerance).
    rc = td.main(["--epochs", "1", "--out", str(png), "--no-progress", "--min-accuracy", "0.5"])
    out = capsys.readouterr()
    assert rc == 0, out.err
