#!/usr/bin/env python3
"""PyTorch peers of bench_moe_layer (issue 22, "Figures"): the MoE layer (E 8 SwiGLU experts,
top k 2, width 384, expert FFN 1536, 4096 tokens) forward + backward, f32, CPU.

  loop     the usual way (Hugging Face's MixtralSparseMoeBlock): for each expert, the rows routed
           to it (torch.where on the routing mask), index_select of their tokens, the SwiGLU
           expert, scaled by the gates, index_add_ into the output
  grouped  the slots sorted by expert, one torch._grouped_mm per projection over all experts
           (offsets = cumulative counts), combine by index_add_; reported as unavailable when
           this torch build does not run it on the CPU
  dense    a dense SwiGLU FFN of the same active FLOPs (FFN k * 1536 = 3072)

Same route construction as bench_moe_layer (k distinct experts per token, uniform; gates = a
softmax over the chosen logits; no drops), gradients to x, the gates and every weight; one step =
forward, y.sum().backward(), gradients released. Median wall time of --repeats steps after one
warm-up, and the fastest process CPU time (all threads; the steadier figure on a shared machine).

  OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE ~/.cache/typeformer/torch-venv/bin/python \\
      bench/moe/torch_moe.py [--threads 1,2] [--repeats 7]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def make(args, gen):
    N, C, Fe, E, K = args.tokens, args.width, args.ffn, args.experts, args.k
    perm = torch.stack([torch.randperm(E, generator=gen)[:K] for _ in range(N)])  # (N, K)
    logits = torch.randn(N, K, generator=gen)
    gates = torch.softmax(logits, dim=-1).requires_grad_()
    x = (torch.rand(N, C, generator=gen) * 2 - 1).requires_grad_()
    ws, wds = C ** -0.5, Fe ** -0.5
    wg = ((torch.rand(E, Fe, C, generator=gen) * 2 - 1) * ws).requires_grad_()
    wu = ((torch.rand(E, Fe, C, generator=gen) * 2 - 1) * ws).requires_grad_()
    wd = ((torch.rand(E, C, Fe, generator=gen) * 2 - 1) * wds).requires_grad_()
    FD = K * Fe
    dg = ((torch.rand(FD, C, generator=gen) * 2 - 1) * ws).requires_grad_()
    du = ((torch.rand(FD, C, generator=gen) * 2 - 1) * ws).requires_grad_()
    dd = ((torch.rand(C, FD, generator=gen) * 2 - 1) * FD ** -0.5).requires_grad_()
    return perm, gates, x, (wg, wu, wd), (dg, du, dd)


def moe_loop(x, perm, gates, wg, wu, wd):
    E = wg.shape[0]
    y = torch.zeros_like(x)
    mask = F.one_hot(perm, E).permute(2, 1, 0)  # (E, K, N)
    for e in range(E):
        j, tok = torch.where(mask[e])
        if tok.numel() == 0:
            continue
        xe = x.index_select(0, tok)
        h = F.silu(F.linear(xe, wg[e])) * F.linear(xe, wu[e])
        out = F.linear(h, wd[e]) * gates[tok, j, None]
        y = y.index_add(0, tok, out)
    return y


def moe_grouped(x, perm, gates, wg, wu, wd):
    E = wg.shape[0]
    flat = perm.reshape(-1)
    order = torch.argsort(flat, stable=True)
    tok = order // perm.shape[1]
    counts = torch.bincount(flat, minlength=E)
    offs = torch.cumsum(counts, 0).to(torch.int32)
    xs = x.index_select(0, tok)
    a = torch._grouped_mm(xs, wg.transpose(-2, -1), offs=offs)
    b = torch._grouped_mm(xs, wu.transpose(-2, -1), offs=offs)
    o = torch._grouped_mm(F.silu(a) * b, wd.transpose(-2, -1), offs=offs)
    o = o * gates.reshape(-1)[order, None]
    return torch.zeros_like(x).index_add(0, tok, o)


def dense(x, dg, du, dd):
    return F.linear(F.silu(F.linear(x, dg)) * F.linear(x, du), dd)


def time_step(fn, params, repeats):
    """(median wall seconds, fastest process CPU seconds) of one step over `repeats` runs."""
    def once():
        c0, t0 = time.process_time(), time.perf_counter()
        fn().sum().backward()
        for p in params:
            p.grad = None
        return time.perf_counter() - t0, time.process_time() - c0

    once()
    runs = [once() for _ in range(repeats)]
    return statistics.median(w for w, _ in runs), min(c for _, c in runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--width", type=int, default=384)
    ap.add_argument("--ffn", type=int, default=1536)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", default="1,2")
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(1)
    perm, gates, x, (wg, wu, wd), (dg, du, dd) = make(args, gen)
    N = args.tokens
    print(f"torch {torch.__version__}: tokens {N}, E {args.experts}, k {args.k}, "
          f"C {args.width}, F {args.ffn}; dense FFN {args.k * args.ffn}; f32")
    moe_params = [x, gates, wg, wu, wd]
    for t in [int(v) for v in args.threads.split(",")]:
        torch.set_num_threads(t)
        tl, cl = time_step(lambda: moe_loop(x, perm, gates, wg, wu, wd), moe_params,
                           args.repeats)
        td, cd = time_step(lambda: dense(x, dg, du, dd), [x, dg, du, dd], args.repeats)
        line = (f"threads {t}: loop {N / tl:.0f} tok/s ({tl:.3f} s, CPU {cl:.3f} s), "
                f"dense {N / td:.0f} tok/s ({td:.3f} s, CPU {cd:.3f} s)")
        try:
            # Same values as the loop (checked once), then timed.
            with torch.no_grad():
                ref = moe_loop(x, perm, gates, wg, wu, wd)
                got = moe_grouped(x, perm, gates, wg, wu, wd)
                if not torch.allclose(ref, got, rtol=1e-4, atol=1e-5):
                    raise RuntimeError("grouped != loop")
            tg, cg = time_step(lambda: moe_grouped(x, perm, gates, wg, wu, wd), moe_params,
                               args.repeats)
            line += f", grouped {N / tg:.0f} tok/s ({tg:.3f} s, CPU {cg:.3f} s)"
        except (RuntimeError, NotImplementedError, AttributeError) as e:
            line += f", grouped unavailable ({str(e).splitlines()[0][:80]})"
        print(line, flush=True)


if __name__ == "__main__":
    main()
