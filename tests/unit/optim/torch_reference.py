#!/usr/bin/env python3
"""Runs torch.optim on a problem written by torch_test.cpp and prints the final parameters.

Usage: torch_reference.py PROBLEM OUT [PROBLEM OUT ...]. Exits 77 when torch cannot be
imported (the test then skips). PROBLEM is whitespace-separated text:
    method dtype                       sgd|adam|adamw  float32|float64
    lr momentum nesterov wd beta1 beta2 eps
    nparams, then per parameter: decay n v_1 .. v_n
    nsteps, then per step: lr g(param 0) .. g(param nparams-1)
Parameters with decay 0 go into a parameter group with weight_decay 0 (biases, norms).
OUT gets one line per parameter with its final values (repr, round-trip exact).
"""
import sys


def solve(torch, problem, out):
    tok = open(problem).read().split()
    pos = 0

    def take():
        nonlocal pos
        pos += 1
        return tok[pos - 1]

    method, dtype = take(), take()
    dt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    lr, mom, nest, wd, b1, b2, eps = (float(take()) for _ in range(7))
    params, decay = [], []
    for _ in range(int(take())):
        decay.append(int(take()) != 0)
        n = int(take())
        params.append(torch.tensor([float(take()) for _ in range(n)], dtype=dt))
    groups = [{"params": [p for p, d in zip(params, decay) if d], "weight_decay": wd},
              {"params": [p for p, d in zip(params, decay) if not d], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if method == "sgd":
        opt = torch.optim.SGD(groups, lr=lr, momentum=mom, nesterov=nest != 0)
    elif method == "adam":
        opt = torch.optim.Adam(groups, lr=lr, betas=(b1, b2), eps=eps)
    else:
        opt = torch.optim.AdamW(groups, lr=lr, betas=(b1, b2), eps=eps)
    for _ in range(int(take())):
        step_lr = float(take())
        for g in opt.param_groups:
            g["lr"] = step_lr
        for p in params:
            p.grad = torch.tensor([float(take()) for _ in range(p.numel())], dtype=dt)
        opt.step()
    with open(out, "w") as f:
        for p in params:
            f.write(" ".join(repr(float(x)) for x in p.tolist()) + "\n")


def main():
    try:
        import torch
    except Exception as e:  # ImportError, or a broken install
        print("torch is not available: %s" % e)
        return 77
    args = sys.argv[1:]
    for i in range(0, len(args) - 1, 2):
        solve(torch, args[i], args[i + 1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
