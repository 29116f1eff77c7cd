"""Train LeNet on scikit-learn's handwritten digits with fastconv, and again with torch.nn.

    python -m fastconv.examples.train_digits [--epochs 8] [--out train_digits.png]

The data set (1797 8x8 grey images of the digits 0-9, bundled with scikit-learn, no download)
is split 75/25 into training and test images, resized to 24x24 (bilinear) so that LeNet's two
5x5 convolutions and 2x2 poolings leave 16 4x4 feature maps, and standardized with the
training images' mean and standard deviation. The run trains `fastconv.models.LeNet`
(fastconv Conv2d and MaxPool2d), then the same network with torch.nn's layers from the same
initial weights on the same batches in the same order, and compares the two learning curves.

Exit status 0 when the fastconv model reaches --min-accuracy on the test images and every
point of the two curves agrees within --tolerance (mean training loss per epoch, absolute;
test accuracy, as a fraction of the test set); 1 otherwise. The curves are saved as a PNG.
"""
import argparse
import copy
import gzip
import importlib.util
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

import fastconv.nn as fnn
from fastconv.models import LeNet

IMAGE_SIZE = 24


def digits_csv_path():
    """The digits file bundled with scikit-learn (the one sklearn.datasets.load_digits reads).

    Read directly: importing sklearn.datasets loads scipy and takes ~10 s on a busy 2-core
    machine, a tenth of this example's time budget, for a 1797-line CSV file.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("train_digits: expected scikit-learn to be installed (its bundled "
                           "digits data set is the training data), got no module 'sklearn'")
    return os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")


def load_digits(seed=0, test_fraction=0.25, image_size=IMAGE_SIZE):
    """(train_x, train_y, test_x, test_y): float32 [N, 1, S, S] standardized images, int64
    labels; a fixed random split (no stratification needed: the 10 classes are balanced)."""
    with gzip.open(digits_csv_path(), "rt") as f:
        data = np.loadtxt(f, delimiter=",", dtype=np.float32)
    images = torch.from_numpy(data[:, :-1]).reshape(-1, 1, 8, 8) / 16.0
    labels = torch.from_numpy(data[:, -1]).long()
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear",
                           align_corners=False)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(labels)))
    test, train = order[:n_test], order[n_test:]
    mean, std = images[train].mean(), images[train].std()
    images = (images - mean) / std
    return images[train], labels[train], images[test], labels[test]


def as_torch_nn(model):
    """A deep copy of `model` with every fastconv module re-typed back to the torch.nn class it
    subclasses: the same weights and structure, computed by PyTorch's own layers."""
    reference = copy.deepcopy(model)
    for module in reference.modules():
        base = next(c for c in type(module).__mro__ if c.__module__.startswith("torch.nn"))
        if base is not type(module) and base is not torch.nn.Module:
            module.__class__ = base
    return reference


def progress(name, epoch, epochs, step, steps, loss, width=24):
    done = int(width * step / steps)
    sys.stderr.write(f"\r{name:>8} epoch {epoch:2d}/{epochs} [{'#' * done}{'.' * (width - done)}]"
                     f" {step:3d}/{steps} loss {loss:.4f}")
    sys.stderr.flush()


def accuracy(model, x, y, batch_size=512):
    model.eval()
    with torch.no_grad():
        correct = sum((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
                      for i in range(0, len(y), batch_size))
    model.train()
    return correct / len(y)


def train(model, data, *, epochs, batch_size, lr, seed, name="", show_progress=True):
    """Adam with a cosine learning-rate schedule; returns the curves
    {"loss": mean training loss per epoch, "accuracy": test accuracy after each epoch}."""
    train_x, train_y, test_x, test_y = data
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps = (len(train_y) + batch_size - 1) // batch_size
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps)
    batches = torch.Generator().manual_seed(seed)  # the same shuffles for every run
    curves = {"loss": [], "accuracy": []}
    model.train()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(train_y), generator=batches)
        total = 0.0
        for step in range(steps):
            idx = order[step * batch_size:(step + 1) * batch_size]
            loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(idx)
            if show_progress:
                progress(name, epoch, epochs, step + 1, steps, loss.item())
        curves["loss"].append(total / len(train_y))
        curves["accuracy"].append(accuracy(model, test_x, test_y))
        if show_progress:
            sys.stderr.write(f"  mean {curves['loss'][-1]:.4f}  test accuracy "
                             f"{100 * curves['accuracy'][-1]:.2f}%\n")
    return curves


def max_difference(a, b):
    return {key: max(abs(x - y) for x, y in zip(a[key], b[key])) for key in a}


def save_plot(path, curves):
    import matplotlib
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for (name, c), style in zip(curves.items(), ("-o", "--x")):
        epochs = range(1, len(c["loss"]) + 1)
        ax_loss.plot(epochs, c["loss"], style, label=name, markersize=4)
        ax_acc.plot(epochs, [100 * a for a in c["accuracy"]], style, label=name, markersize=4)
    ax_loss.set(xlabel="epoch", ylabel="mean training loss", yscale="log",
                title="training loss (cross entropy)")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("LeNet on scikit-learn digits: fastconv vs torch.nn, same seed and batches")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastconv.examples.train_digits",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (tiny convolutions gain nothing from more)")
    p.add_argument("--out", default="train_digits.png", help="PNG file for the curves")
    p.add_argument("--min-accuracy", type=float, default=0.97)
    p.add_argument("--tolerance", type=float, default=0.02,
                   help="largest allowed difference between the fastconv and torch.nn curves")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    data = load_digits(seed=args.seed)
    print(f"digits: {len(data[1])} training and {len(data[3])} test images, "
          f"{IMAGE_SIZE}x{IMAGE_SIZE}; {args.epochs} epochs of batch {args.batch_size}, "
          f"{args.threads} thread(s)")
    torch.manual_seed(args.seed)
    model = LeNet(num_classes=10, in_channels=1, image_size=IMAGE_SIZE)
    reference = as_torch_nn(model)  # same initial weights, torch.nn layers
    assert not any(isinstance(m, (fnn.Conv2d, fnn.MaxPool2d)) for m in reference.modules())
    curves, seconds = {}, {}
    for name, net in (("fastconv", model), ("torch.nn", reference)):
        t0 = time.perf_counter()
        curves[name] = train(net, data, epochs=args.epochs, batch_size=args.batch_size,
                             lr=args.lr, seed=args.seed, name=name,
                             show_progress=not args.no_progress)
        seconds[name] = time.perf_counter() - t0
    save_plot(args.out, curves)
    diff = max_difference(curves["fastconv"], curves["torch.nn"])
    final = curves["fastconv"]["accuracy"][-1]
    print(f"training time: fastconv {seconds['fastconv']:.1f} s, torch.nn "
          f"{seconds['torch.nn']:.1f} s; whole run {time.perf_counter() - start:.1f} s")
    print(f"test accuracy: fastconv {100 * final:.2f}%, torch.nn "
          f"{100 * curves['torch.nn']['accuracy'][-1]:.2f}%")
    print(f"max curve difference: loss {diff['loss']:.2e}, accuracy {100 * diff['accuracy']:.2f}"
          f" points (tolerance {args.tolerance:g}); curves saved to {args.out}")
    failures = []
    if final < args.min_accuracy:
        failures.append(f"test accuracy {100 * final:.2f}% < {100 * args.min_accuracy:.2f}%")
    if max(diff.values()) > args.tolerance:
        failures.append(f"the curves differ by up to {max(diff.values()):.3g} > {args.tolerance}")
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
