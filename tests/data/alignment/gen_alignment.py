#!/usr/bin/env python3
"""Reference values of the alignment losses (tests/unit/alignment), written from the papers
with numpy, independently of include/typeformer/ops/alignment_loss.hpp and train/rl_math.hpp.

  DPO     Rafailov et al. 2023, arXiv:2305.18290 eq. 7; cDPO label smoothing (Mitchell 2023)
  IPO     Azar et al. 2023, arXiv:2310.12036 eq. 17: (h - 1/(2 tau))^2
  hinge   SLiC-HF (Zhao et al. 2023): max(0, 1 - beta h)
  BT      Ouyang et al. 2022, arXiv:2203.02155 eq. 1 (margin: Llama 2 eq. 2)
  PPO     Schulman et al. 2017, arXiv:1707.06347 eq. 7 per token (TRL PPOTrainer's masked means)
  GRPO    Shao et al. 2024, arXiv:2402.03300 eq. 3 and the k3 KL of eq. 4
  GAE     Schulman et al. 2015, arXiv:1506.02438 eq. 16 (written as the explicit sum)

Output: alignment_cases.txt, one array per line: `name n v0 v1 ...` (repr of float64).
Run: python3 gen_alignment.py   (numpy only; deterministic, seed 20261207).
"""
import os

import numpy as np

rng = np.random.default_rng(20261207)
out = []


def put(name, a):
    a = np.asarray(a, dtype=np.float64).ravel()
    out.append(name + " " + str(a.size) + " " + " ".join(repr(float(x)) for x in a))


def logsig(x):
    # log(1 / (1 + exp(-x))) through logaddexp, stable for large |x|
    return -np.logaddexp(0.0, -x)


# ---- sequence log-probs ----
B, T = 4, 6
nll = rng.uniform(0.05, 4.0, (B, T))
lengths = [6, 3, 1, 4]
starts = [0, 2, 5, 1]
mask = np.zeros((B, T))
for b in range(B):
    mask[b, starts[b]:starts[b] + lengths[b]] = 1
put("seq.nll", nll)
put("seq.mask", mask)
put("seq.sum", [-(nll[b] * mask[b]).sum() for b in range(B)])
put("seq.mean", [-(nll[b] * mask[b]).sum() / mask[b].sum() for b in range(B)])

# ---- DPO ----
B = 8
pc = rng.uniform(-40, -5, B)
pr = rng.uniform(-40, -5, B)
rc = pc + rng.normal(0, 2.0, B)
rr = pr + rng.normal(0, 2.0, B)
for n, a in (("pc", pc), ("pr", pr), ("rc", rc), ("rr", rr)):
    put("dpo." + n, a)


def dpo(beta, kind, ls):
    h = (pc - rc) - (pr - rr)  # log ratio of chosen minus that of rejected
    if kind == "sigmoid":
        l = -(1 - ls) * logsig(beta * h) - ls * logsig(-beta * h)
    elif kind == "ipo":
        l = (h - 1.0 / (2 * beta)) ** 2
    else:
        l = np.maximum(0.0, 1 - beta * h)
    cr, rj = beta * (pc - rc), beta * (pr - rr)
    return [l.mean(), cr.mean(), rj.mean(), (cr - rj).mean(), (cr > rj).mean()]


for tag, beta, kind, ls in (("sigmoid", 0.1, "sigmoid", 0.0), ("cdpo", 0.5, "sigmoid", 0.2),
                            ("ipo", 0.1, "ipo", 0.0), ("hinge", 0.3, "hinge", 0.0)):
    put("dpo." + tag, dpo(beta, kind, ls))

# ---- Bradley-Terry ----
B = 9
r_c = rng.normal(0, 2, B)
r_r = rng.normal(0, 2, B)
marg = rng.uniform(0, 1, B)
put("bt.rc", r_c)
put("bt.rr", r_r)
put("bt.margin", marg)
put("bt.plain", [-logsig(r_c - r_r).mean(), (r_c > r_r).mean()])
put("bt.margin_loss", [-logsig(r_c - r_r - marg).mean()])
put("bt.scalar_margin_loss", [-logsig(r_c - r_r - 0.5).mean()])

# ---- PPO ----
B, T = 3, 7
old = rng.uniform(-6, -0.1, (B, T))
new = old + rng.normal(0, 0.3, (B, T))
adv = rng.normal(0, 1, (B, T))
m = (rng.uniform(0, 1, (B, T)) < 0.75).astype(np.float64)
m[0, 0] = 1
put("ppo.new", new)
put("ppo.old", old)
put("ppo.adv", adv)
put("ppo.mask", m)
eps = 0.2
ratio = np.exp(new - old)
unclipped = -adv * ratio
clipped = -adv * np.clip(ratio, 1 - eps, 1 + eps)
n = m.sum()
put("ppo.policy", [(np.maximum(unclipped, clipped) * m).sum() / n,
                   ((clipped > unclipped) * m).sum() / n,
                   (0.5 * (new - old) ** 2 * m).sum() / n,
                   (((ratio - 1) - np.log(ratio)) * m).sum() / n,
                   (ratio * m).sum() / n])
val = rng.normal(0, 1, (B, T))
old_val = val + rng.normal(0, 0.4, (B, T))
ret = rng.normal(0, 1, (B, T))
put("ppo.values", val)
put("ppo.old_values", old_val)
put("ppo.returns", ret)
cv = 0.2
vclip = np.clip(val, old_val - cv, old_val + cv)
l1, l2 = (val - ret) ** 2, (vclip - ret) ** 2
put("ppo.value", [0.5 * (np.maximum(l1, l2) * m).sum() / n, ((l2 > l1) * m).sum() / n])

# ---- GRPO ----
B, T = 4, 6
old = rng.uniform(-5, -0.1, (B, T))
new = old + rng.normal(0, 0.3, (B, T))
ref = new + rng.normal(0, 0.5, (B, T))
a_seq = rng.normal(0, 1, B)
m = np.zeros((B, T))
for b, (s, l) in enumerate(((0, 6), (1, 2), (2, 4), (0, 3))):
    m[b, s:s + l] = 1
for k, a in (("new", new), ("old", old), ("ref", ref), ("adv", a_seq), ("mask", m)):
    put("grpo." + k, a)


def grpo(eps_lo, eps_hi, beta, norm, L=None):
    A = a_seq[:, None]
    r = np.exp(new - old)
    surrogate = np.minimum(r * A, np.clip(r, 1 - eps_lo, 1 + eps_hi) * A)  # eq. 3, maximised
    kl = np.exp(ref - new) - (ref - new) - 1  # eq. 4
    per_tok = -(surrogate - beta * kl)
    if norm == "sequence":
        loss = np.mean([(per_tok[b] * m[b]).sum() / m[b].sum() for b in range(B)])
    elif norm == "token":
        loss = (per_tok * m).sum() / m.sum()
    else:
        loss = (per_tok * m).sum() / (B * (L or T))
    clip_active = (-np.clip(r, 1 - eps_lo, 1 + eps_hi) * A) > (-r * A)
    return [loss, (clip_active * m).sum() / m.sum(), (kl * m).sum() / m.sum()]


put("grpo.sequence", grpo(0.2, 0.2, 0.04, "sequence"))
put("grpo.token", grpo(0.2, 0.28, 0.1, "token"))
put("grpo.fixed", grpo(0.2, 0.2, 0.04, "fixed", 10))

# ---- rl_math ----
Tn = 7
rew = rng.normal(0, 1, Tn)
vals = rng.normal(0, 1, Tn)
gamma, lam = 0.99, 0.95
put("gae.rewards", rew)
put("gae.values", vals)
v_next = np.append(vals[1:], 0.0)
delta = rew + gamma * v_next - vals
A = np.array([sum((gamma * lam) ** l * delta[t + l] for l in range(Tn - t)) for t in range(Tn)])
put("gae.adv", A)
put("gae.ret", A + vals)
v_next = np.append(vals[1:], 0.7)  # a cut sequence bootstrapped with V = 0.7
delta = rew + gamma * v_next - vals
A = np.array([sum((gamma * lam) ** l * delta[t + l] for l in range(Tn - t)) for t in range(Tn)])
put("gae.adv_boot", A)

x = rng.normal(3, 2, 10)
wm = np.array([1, 1, 0, 1, 1, 1, 0, 1, 1, 0], dtype=np.float64)
put("whiten.x", x)
put("whiten.mask", wm)
sel = x[wm == 1]
mu, var = sel.mean(), sel.var(ddof=1)
put("whiten.shift", (x - mu) / np.sqrt(var + 1e-8))
put("whiten.noshift", (x - mu) / np.sqrt(var + 1e-8) + mu)

gr = rng.integers(0, 3, 12).astype(np.float64)
gr[8:12] = 1.0  # a group of identical rewards
put("group.rewards", gr)
g = gr.reshape(-1, 4)
put("group.std", ((g - g.mean(1, keepdims=True)) / (g.std(1, ddof=1, keepdims=True) + 1e-4)))
put("group.nostd", g - g.mean(1, keepdims=True))

B, T = 3, 5
score = rng.normal(0, 1, B)
lp = rng.uniform(-4, -0.1, (B, T))
rlp = lp + rng.normal(0, 0.3, (B, T))
km = np.array([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 0, 1, 0, 0]], dtype=np.float64)
for k, a in (("score", score), ("logp", lp), ("ref", rlp), ("mask", km)):
    put("klr." + k, a)
for est in ("k1", "k3"):
    d = lp - rlp
    kl = d if est == "k1" else np.exp(-d) + d - 1
    r = -0.05 * kl * km
    for b in range(B):
        r[b, np.nonzero(km[b])[0].max()] += score[b]
    put("klr." + est, r)

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "alignment_cases.txt")
with open(path, "w") as f:
    f.write("\n".join(out) + "\n")
print("wrote", path, len(out), "arrays")
