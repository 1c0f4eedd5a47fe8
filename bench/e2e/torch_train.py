"""PyTorch CPU eager peer of bench_train.cpp: the same GPT-2 style model (learned positions,
LayerNorm, tanh-GELU MLP, biases, tied embeddings, N(0, 0.02) init with scaled residual
projections), one step = forward + backward + clip_grad_norm(1.0) + AdamW.
usage: torch_train.py 6l384|124m [steps]   (prints "name tokens_per_s median_step_ms peak_rss_mb")"""
import math, resource, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F

which = sys.argv[1] if len(sys.argv) > 1 else "6l384"
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
cfg = {"6l384": dict(L=6, H=6, C=384, V=50257, T=256, B=4, Tmax=256),
       "124m": dict(L=12, H=12, C=768, V=50257, T=64, B=4, Tmax=1024)}[which]
torch.manual_seed(0)


class Block(nn.Module):
    def __init__(s, C, H, L):
        super().__init__()
        s.H = H
        s.ln_1, s.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        s.c_attn, s.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        s.c_fc, s.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)
        for lin in (s.c_proj, s.mlp_proj):
            nn.init.normal_(lin.weight, std=0.02 / math.sqrt(2 * L))

    def forward(s, x, mask):
        B, T, C = x.shape
        q, k, v = s.c_attn(s.ln_1(x)).split(C, dim=2)
        D = C // s.H
        q, k, v = (t.view(B, T, s.H, D).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D)) + mask[:T, :T]
        y = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
        x = x + s.c_proj(y)
        return x + s.mlp_proj(F.gelu(s.c_fc(s.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(s, L, H, C, V, Tmax, **_):
        super().__init__()
        s.wte, s.wpe = nn.Embedding(V, C), nn.Embedding(Tmax, C)
        s.h = nn.ModuleList([Block(C, H, L) for _ in range(L)])
        s.ln_f = nn.LayerNorm(C)
        for m in s.modules():
            if isinstance(m, nn.Linear):
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
        s.register_buffer("mask", torch.full((Tmax, Tmax), float("-inf")).triu(1))

    def forward(s, idx, targets):
        T = idx.shape[1]
        x = s.wte(idx) + s.wpe(torch.arange(T))
        for b in s.h:
            x = b(x, s.mask)
        logits = F.linear(s.ln_f(x), s.wte.weight)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


model = GPT(**cfg)
decay = [p for p in model.parameters() if p.dim() >= 2]
no_decay = [p for p in model.parameters() if p.dim() < 2]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-4)
B, T, V = cfg["B"], cfg["T"], cfg["V"]
i = torch.arange(B * T)
x = ((i * 7919 + 3) % V).view(B, T)
y = ((i * 7919 + 10) % V).view(B, T)


def step():
    opt.zero_grad(set_to_none=True)
    loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


step()
ts = []
for _ in range(steps):
    t0 = time.perf_counter()
    step()
    ts.append(time.perf_counter() - t0)
ts.sort()
s = ts[len(ts) // 2]
print(f"{which} {B * T / s:.1f} {s * 1e3:.1f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f}")
