"""Shared inputs and references of the ROI tests (test_roi_align.py, test_roi_pool.py,
test_schedules_roi.py): box sets with every edge case the issue names, and an fp64 ROI Align
reference written independently of the kernels (dense interpolation matrices, not taps)."""
import math

import torch


def edge_case_boxes(n_images, height, width, spatial_scale, empty_image=None):
    """Boxes (K, 5) in image pixels for a (n_images, C, height, width) map at spatial_scale:
    inside, partly and wholly outside (in both axes or in one), degenerate, inverted, tiny,
    whole-map and many small boxes, spread over the images except `empty_image`, which gets
    none."""
    H, W = height / spatial_scale, width / spatial_scale  # image size in pixels
    boxes = [
        (0.13 * W, 0.21 * H, 0.71 * W, 0.83 * H),      # inside
        (-0.31 * W, -0.17 * H, 0.42 * W, 0.37 * H),    # partly outside (top left)
        (0.55 * W, 0.61 * H, 1.37 * W, 1.29 * H),      # partly outside (bottom right)
        (1.5 * W, 1.2 * H, 2.1 * W, 1.9 * H),          # wholly outside
        (-0.9 * W, -0.8 * H, -0.2 * W, -0.3 * H),      # wholly outside, negative
        (1.3 * W, 0.2 * H, 1.8 * W, 0.6 * H),          # beside the map: rows in, columns out
        (0.2 * W, -0.9 * H, 0.7 * W, -0.4 * H),        # above the map: columns in, rows out
        (0.4 * W, 0.3 * H, 0.4 * W, 0.3 * H),          # degenerate (a point)
        (0.6 * W, 0.2 * H, 0.6 * W, 0.7 * H),          # degenerate (a line)
        (0.8 * W, 0.7 * H, 0.3 * W, 0.2 * H),          # inverted
        (0.52 * W, 0.47 * H, 0.52 * W + 0.3, 0.47 * H + 0.2),  # tiny
        (0.0, 0.0, W, H),                              # the whole map
        (0.0, 0.0, W - 1, H - 1),                      # the whole map, inclusive corners
    ]
    g = torch.Generator().manual_seed(len(boxes))
    for _ in range(9):                                  # many small boxes
        x, y = torch.rand(2, generator=g).tolist()
        w, h = (torch.rand(2, generator=g) * 0.3 + 0.02).tolist()
        boxes.append((x * W, y * H, (x + w) * W, (y + h) * H))
    images = [i for i in range(n_images) if i != empty_image]
    rows = [(images[i % len(images)],) + b for i, b in enumerate(boxes)]
    return torch.tensor(rows, dtype=torch.float64)


def _axis_matrix(v, size):
    """(len(v), size) bilinear interpolation weights along one axis, torchvision's rules:
    v < -1 or v > size reads nothing; v clamps to [0, size - 1]."""
    m = torch.zeros(len(v), size, dtype=torch.float64)
    for i, t in enumerate(v.tolist()):
        if t < -1 or t > size:
            continue
        t = max(t, 0.0)
        low = int(math.floor(t))
        if low >= size - 1:
            m[i, size - 1] = 1.0
            continue
        frac = t - low
        m[i, low] += 1 - frac
        m[i, low + 1] += frac
    return m


def reference_roi_align(x, rois, spatial_scale, output_size, sampling_ratio, aligned):
    """fp64 ROI Align: each bin the mean of its grid_h x grid_w bilinear samples."""
    ph, pw = output_size
    x = x.detach().double().cpu()
    K, (N, C, H, W) = rois.shape[0], x.shape
    out = torch.zeros(K, C, ph, pw, dtype=torch.float64)
    offset = 0.5 if aligned else 0.0
    for k, r in enumerate(rois.detach().double().cpu().tolist()):
        x1, y1, x2, y2 = (c * spatial_scale - offset for c in r[1:])
        rw, rh = x2 - x1, y2 - y1
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / ph)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / pw)
        if gh <= 0 or gw <= 0:
            continue
        ys = torch.tensor([y1 + (p + (i + 0.5) / gh) * rh / ph
                           for p in range(ph) for i in range(gh)],
                          dtype=torch.float64)
        xs = torch.tensor([x1 + (p + (i + 0.5) / gw) * rw / pw
                           for p in range(pw) for i in range(gw)],
                          dtype=torch.float64)
        my, mx = _axis_matrix(ys, H), _axis_matrix(xs, W)
        samples = torch.einsum("yh,chw,xw->cyx", my, x[int(r[0])], mx)
        out[k] = samples.reshape(C, ph, gh, pw, gw).sum(dim=(2, 4)) / max(gh * gw, 1)
    return out


def reference_roi_pool(x, rois, spatial_scale, output_size):
    """fp64 ROI Pool values (max over each bin, 0 for an empty one), torchvision's rounding."""
    ph, pw = output_size
    x = x.detach().double().cpu()
    K, (N, C, H, W) = rois.shape[0], x.shape
    out = torch.zeros(K, C, ph, pw, dtype=torch.float64)

    def rnd(v):  # half away from zero, like std::round
        return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)

    for k, r in enumerate(rois.detach().double().cpu().tolist()):
        x1, y1, x2, y2 = (rnd(c * spatial_scale) for c in r[1:])
        rw, rh = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        bh, bw = rh / ph, rw / pw  # bin sizes; bins are [floor(i * b), ceil((i + 1) * b))
        for i in range(ph):
            h0 = min(max(math.floor(i * bh) + y1, 0), H)
            h1 = min(max(math.ceil((i + 1) * bh) + y1, 0), H)
            for j in range(pw):
                w0 = min(max(math.floor(j * bw) + x1, 0), W)
                w1 = min(max(math.ceil((j + 1) * bw) + x1, 0), W)
                if h1 > h0 and w1 > w0:
                    out[k, :, i, j] = x[int(r[0]), :, h0:h1, w0:w1].amax(dim=(1, 2))
    return out


def grads(fn, x, rois, grad):
    """The gradient of fn(x, rois) with respect to x for the upstream gradient grad."""
    xg = x.detach().requires_grad_()
    return torch.autograd.grad(fn(xg, rois), xg, grad)[0]


def with_threads(threads, fn):
    """fn() run with torch's intra-op thread count set to threads (restored afterwards)."""
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        return fn()
    finally:
        torch.set_num_threads(previous)
