"""PyTorch CPU eager peer of bench_autodiff.cpp: same shapes, same loss, fwd+bwd median.
usage: torch_autodiff.py mlp|block [repeats]   (prints "name median_ms peak_rss_mb baseline_rss_mb")"""
import math, resource, sys, time
import torch
import torch.nn.functional as F

torch.manual_seed(0)
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
which = sys.argv[1] if len(sys.argv) > 1 else "mlp"
repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 11


def median_ms(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    return 1e3 * ts[len(ts) // 2]


if which == "mlp":
    B, C, Fh = 64, 768, 3072
    w1 = (torch.randn(Fh, C) * 0.02).requires_grad_()
    b1 = torch.zeros(Fh, requires_grad=True)
    w2 = (torch.randn(C, Fh) * 0.02).requires_grad_()
    b2 = torch.zeros(C, requires_grad=True)
    x, y = torch.randn(B, C), torch.randn(B, C)
    params = [w1, b1, w2, b2]

    def step():
        for p in params:
            p.grad = None
        out = F.linear(F.gelu(F.linear(x, w1, b1), approximate="tanh"), w2, b2)
        ((out - y) ** 2).mean().backward()
elif which == "block":
    B, T, C, H, Fh = 8, 128, 768, 12, 3072
    D = C // H

    def p(*s, std=0.02):
        return (torch.randn(*s) * std).requires_grad_()

    ln1w, ln1b = torch.ones(C, requires_grad=True), torch.zeros(C, requires_grad=True)
    ln2w, ln2b = torch.ones(C, requires_grad=True), torch.zeros(C, requires_grad=True)
    wqkv, bqkv = p(3 * C, C), torch.zeros(3 * C, requires_grad=True)
    wo, bo = p(C, C, std=0.02 / math.sqrt(2)), torch.zeros(C, requires_grad=True)
    wfc, bfc = p(Fh, C), torch.zeros(Fh, requires_grad=True)
    wpr, bpr = p(C, Fh, std=0.02 / math.sqrt(2)), torch.zeros(C, requires_grad=True)
    params = [ln1w, ln1b, ln2w, ln2b, wqkv, bqkv, wo, bo, wfc, bfc, wpr, bpr]
    x, y = torch.randn(B, T, C), torch.randn(B, T, C)
    mask = torch.full((T, T), float("-inf")).triu(1)

    def step():
        for q in params:
            q.grad = None
        h = F.layer_norm(x, (C,), ln1w, ln1b)
        q, k, v = F.linear(h, wqkv, bqkv).split(C, dim=2)
        q = q.view(B, T, H, D).transpose(1, 2)
        k = k.view(B, T, H, D).transpose(1, 2)
        v = v.view(B, T, H, D).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(D) + mask
        o = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
        h1 = x + F.linear(o, wo, bo)
        h2 = h1 + F.linear(F.gelu(F.linear(F.layer_norm(h1, (C,), ln2w, ln2b), wfc, bfc), approximate="tanh"), wpr, bpr)
        ((h2 - y) ** 2).mean().backward()
else:
    sys.exit("usage: torch_autodiff.py mlp|block [repeats]")

ms = median_ms(step, repeats)
print(f"{which} {ms:.3f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} {baseline:.1f}")
