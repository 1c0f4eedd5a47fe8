#!/usr/bin/env python3
"""PyTorch peers for issue 21's fine-tuning figures (LoRA SFT step, DPO step), CPU, f32.

Modes (see bench/finetune/README.md):

  prepare a Hugging Face model directory from a llama GGUF (`tfm convert GGUF DIR --type f32`):
    torch_peers.py --prepare GGUF --model DIR [--tfm PATH]
  sanity checks: HF model logits against llama-cpp-python's on the same f32 weights; the PyTorch
  DPO loss against TRL's DPOTrainer.compute_loss on the same batch and adapter weights:
    torch_peers.py --check-logits --model DIR --gguf GGUF [--llama-python PY]
    torch_peers.py --check-dpo --model DIR [--batch 2 --seq 64]
  time a step:
    torch_peers.py --model DIR --task lora|qlora|dpo --threads N --batch B --seq S --steps K [--json]

Timing: `--warmup` steps (default 1) are run first and not timed; then `--steps` steps are timed one
by one and the median is reported. tokens_per_s = tokens per step / median step time, where tokens
per step is B * S for lora and B * 2 * S for dpo (B pairs, each a chosen and a rejected sequence of
S = prompt + response tokens; the reference forward pass over the same tokens is part of the step).
peak_rss_mb is the process's peak RSS (Python runtime, torch, loading and the f32 base included);
rss_loaded_mb is the resident set just after the model and adapters were built, before any step;
peak_rss_steps_mb is the peak of the steps alone (VmHWM reset there via /proc/self/clear_refs).
AdamW (lr 1e-4, no weight decay) on the trainable parameters, gradients clipped at norm 1.0
(--max-grad-norm; TRL's default too), as bench_finetune_step does.

Data is random token ids (seeded); the LoRA loss is the causal LM loss, the mean next-token
cross-entropy over all B * (S - 1) positions (transformers' loss for labels=input_ids); the DPO loss
is sigmoid DPO (Rafailov et al., arXiv:2305.18290) on the response tokens' summed log-probabilities,
reference = the same model with its adapters disabled (TRL's DPOTrainer by default, --dpo-impl torch
for the same loss written here). qlora is the lora step on an NF4 base (bitsandbytes' CPU backend).
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def rss_now_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def vm_hwm_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


PEAK_BEFORE_RESET = [0.0]


def reset_hwm():
    """Resets VmHWM to the current RSS (Linux: "5" to /proc/self/clear_refs), so that the peak of
    the training steps alone can be read after them, as bench_finetune_step does. It resets
    getrusage's ru_maxrss too (both read the mm's hiwater_rss), so the peak so far is kept first."""
    PEAK_BEFORE_RESET[0] = max(PEAK_BEFORE_RESET[0], vm_hwm_mb(), peak_rss_mb())
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


# --------------------------------------------------------------------------------------------------
# --prepare: GGUF -> HF directory (config.json, model.safetensors, tokenizer files)


def prepare(gguf_path, out_dir, tfm):
    """`tfm convert GGUF DIR --type f32` (io::export_hf on io::read_export_model): config.json
    (LlamaConfig), model.safetensors (F32, q/k rows in HF's rotate_half order), tokenizer.json
    (SmolLM2's pre "smollm" as [Digits, ByteLevel]), tokenizer_config.json (bos/eos/pad tokens,
    chat template) and generation_config.json."""
    subprocess.run([tfm, "convert", gguf_path, out_dir, "--type", "f32"], check=True)
    with open(os.path.join(out_dir, "config.json")) as f:
        config = json.load(f)
    if config.get("model_type") != "llama":
        sys.exit(f"--prepare: {gguf_path}: model_type is {config.get('model_type')!r}, only 'llama' is handled")
    print(
        f"prepared {out_dir}: {config['num_hidden_layers']} layers, "
        f"tied lm_head={config['tie_word_embeddings']}, tokenizer from the GGUF"
    )


# --------------------------------------------------------------------------------------------------
# --check-logits: HF (torch) logits vs llama-cpp-python's on an f32 GGUF of the same weights

CHECK_IDS = [1, 504, 3458, 282, 4649, 314, 253, 1345, 30, 378, 2365, 1233, 288, 2496, 2451, 28]


def llama_logits(gguf_path, out_npy):
    """Runs under a Python that has llama_cpp; writes the logits of CHECK_IDS (n_tokens, n_vocab)."""
    import numpy as np
    from llama_cpp import Llama

    # f32 KV cache (type 0 = GGML_TYPE_F32): the default f16 cache alone moves logits by ~1e-3.
    llm = Llama(model_path=gguf_path, n_ctx=64, logits_all=True, verbose=False, n_threads=2, type_k=0, type_v=0)
    llm.eval(CHECK_IDS)
    np.save(out_npy, np.array(llm.scores[: len(CHECK_IDS)], dtype=np.float32))


def check_logits(model_dir, llama_python, tfm, gguf_path):
    import numpy as np
    import torch
    from transformers import LlamaForCausalLM

    with tempfile.TemporaryDirectory() as td:
        f32 = os.path.join(td, "f32.gguf")
        subprocess.run([tfm, "convert", gguf_path, f32, "--type", "f32"], check=True)
        ref_npy = os.path.join(td, "ref.npy")
        subprocess.run(
            [llama_python, os.path.abspath(__file__), "--llama-logits", f32, "--out", ref_npy], check=True
        )
        ref = np.load(ref_npy)
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        got = model(torch.tensor([CHECK_IDS])).logits[0].numpy()
    diff = np.abs(got - ref)
    rel = diff.max() / np.abs(ref).max()
    argmax_eq = float((got.argmax(-1) == ref.argmax(-1)).mean())
    print(
        json.dumps(
            {
                "check": "logits_vs_llama_cpp",
                "tokens": len(CHECK_IDS),
                "max_abs_diff": float(diff.max()),
                "max_abs_ref": float(np.abs(ref).max()),
                "max_rel_diff": float(rel),
                "argmax_agreement": argmax_eq,
            }
        )
    )
    ok = rel < 1e-3 and argmax_eq == 1.0
    print("logits agree" if ok else "LOGITS DISAGREE")
    return 0 if ok else 1


# --------------------------------------------------------------------------------------------------
# timed steps


def versions():
    out = {"python": platform.python_version()}
    for name in ["torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes"]:
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - absent package: no version
            pass
    return out


def lora_config(args):
    from peft import LoraConfig

    return LoraConfig(
        r=args.rank,
        lora_alpha=args.alpha,
        lora_dropout=0.0,
        target_modules=LORA_TARGETS,
        bias="none",
        task_type="CAUSAL_LM",
    )


def build_base_model(args):
    import torch
    from transformers import LlamaForCausalLM

    kw = {}
    if args.task == "qlora":
        # QLoRA (Dettmers et al., arXiv:2305.14314): the base's linear layers in NF4 (blocks of 64,
        # no double quantization unless --double-quant), computed in f32; embeddings, norms and the
        # tied head stay f32. Needs bitsandbytes with its CPU backend (>= 0.46 has one).
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.float32,
            bnb_4bit_use_double_quant=args.double_quant,
        )
        kw["device_map"] = "cpu"
    base = LlamaForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation=args.attn, **kw)
    base.config.use_cache = False
    return base


def build_lora_model(args):
    from peft import get_peft_model

    base = build_base_model(args)
    if args.grad_ckpt:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(base, lora_config(args))
    model.train()
    return model


def time_steps(step, warmup, steps):
    """Wall times of `steps` steps after `warmup` untimed ones, and their process CPU times (all
    threads; on a shared machine CPU seconds per step are steadier than wall seconds)."""
    for _ in range(warmup):
        step()
    times, cpu = [], []
    for _ in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return times, cpu


def run_lora(args, torch):
    if args.task == "full":
        model = build_base_model(args)
        if args.grad_ckpt:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
    else:
        model = build_lora_model(args)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    g = torch.Generator().manual_seed(args.seed)
    vocab = model.config.vocab_size
    batches = [torch.randint(0, vocab, (args.batch, args.seq), generator=g) for _ in range(4)]
    rss_loaded = rss_now_mb()
    reset_hwm()
    state = {"i": 0, "loss": []}

    def step():
        x = batches[state["i"] % len(batches)]
        state["i"] += 1
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        if args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["loss"].append(loss.detach().item())

    times, cpu = time_steps(step, args.warmup, args.steps)
    extra = {"trainable_params": sum(p.numel() for p in params), "last_loss": state["loss"][-1]}
    return times, cpu, args.batch * args.seq, rss_loaded, extra


def dpo_batches(args, vocab, torch, n=4):
    """n batches of B pairs: a shared random prompt and two random responses each."""
    g = torch.Generator().manual_seed(args.seed)
    p, r = args.prompt_len, args.seq - args.prompt_len
    out = []
    for _ in range(n):
        prompt = torch.randint(0, vocab, (args.batch, p), generator=g)
        chosen = torch.randint(0, vocab, (args.batch, r), generator=g)
        rejected = torch.randint(0, vocab, (args.batch, r), generator=g)
        out.append((prompt, chosen, rejected))
    return out


def dpo_loss_torch(model, batch, beta, torch):
    """Sigmoid DPO loss of one batch (prompt, chosen, rejected), each (B, len) token ids; the
    reference is `model` with its adapters disabled."""
    import torch.nn.functional as F

    prompt, chosen, rejected = batch
    b, p = prompt.shape

    def seq_logps(x):
        # Log-probability of each response token given its prefix, summed per sequence: the
        # logits at t predict token t + 1, so response tokens p..S-1 use logits p-1..S-2.
        logits = model(input_ids=x).logits[:, p - 1 : -1]
        lp = torch.log_softmax(logits.float(), dim=-1)
        return lp.gather(-1, x[:, p:, None]).squeeze(-1).sum(-1)

    # chosen and rejected in one forward pass, as TRL does (concatenated batch)
    x = torch.cat([torch.cat([prompt, chosen], 1), torch.cat([prompt, rejected], 1)], 0)
    pol = seq_logps(x)
    with torch.no_grad(), model.disable_adapter():
        ref = seq_logps(x)
    margin = (pol[:b] - ref[:b]) - (pol[b:] - ref[b:])
    return -F.logsigmoid(beta * margin).mean()


def run_dpo_torch(args, torch):
    model = build_lora_model(args)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    batches = dpo_batches(args, model.config.vocab_size, torch)
    rss_loaded = rss_now_mb()
    reset_hwm()
    state = {"i": 0, "loss": []}

    def step():
        loss = dpo_loss_torch(model, batches[state["i"] % len(batches)], args.beta, torch)
        state["i"] += 1
        loss.backward()
        if args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, args.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["loss"].append(loss.detach().item())

    times, cpu = time_steps(step, args.warmup, args.steps)
    extra = {"impl": "torch", "trainable_params": sum(q.numel() for q in params), "last_loss": state["loss"][-1]}
    return times, cpu, args.batch * 2 * args.seq, rss_loaded, extra


def make_trl_trainer(args, base, n_rows, callbacks, output_dir):
    """TRL's DPOTrainer on `base` with TRL adding the LoRA adapters (peft_config): the reference is
    then the base with adapters disabled (given an already wrapped PeftModel, TRL 1.16 would add a
    second "ref" adapter and run the reference through it). Sigmoid loss, f32, no gradient
    checkpointing unless --grad-ckpt (TRL's default is on), no bf16 (TRL's default is on)."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # DPOTrainer tokenizes text datasets when it is built; it gets a tiny text set, and the caller
    # replaces it by random token ids in the columns its collator reads.
    text = Dataset.from_dict({"prompt": ["a"] * n_rows, "chosen": ["b"] * n_rows, "rejected": ["c"] * n_rows})
    cfg = DPOConfig(
        output_dir=output_dir,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        max_steps=args.warmup + args.steps,
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=args.max_grad_norm,
        optim="adamw_torch",
        beta=args.beta,
        loss_type=["sigmoid"],
        max_length=args.seq,
        bf16=False,
        fp16=False,
        gradient_checkpointing=args.grad_ckpt,
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=args.seed,
        pad_to_multiple_of=None,
    )
    trainer = DPOTrainer(
        model=base,
        ref_model=None,
        args=cfg,
        train_dataset=text,
        processing_class=tokenizer,
        callbacks=callbacks,
        peft_config=lora_config(args),
    )
    names = [n for n, _ in trainer.model.named_parameters() if "lora_" in n]
    if not names or any(".ref." in n for n in names):
        sys.exit("DPOTrainer: expected one LoRA adapter and no 'ref' adapter")
    return trainer


def dpo_rows(batches):
    rows = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
    for prompt, chosen, rejected in batches:
        for j in range(prompt.shape[0]):
            rows["prompt_ids"].append(prompt[j].tolist())
            rows["chosen_ids"].append(chosen[j].tolist())
            rows["rejected_ids"].append(rejected[j].tolist())
    return rows


def run_dpo_trl(args, torch):
    from datasets import Dataset
    from transformers import TrainerCallback

    base = build_base_model(args)
    batches = dpo_batches(args, base.config.vocab_size, torch, n=args.warmup + args.steps)

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.cpu, self.t0, self.c0 = [], [], None, None

        def on_step_begin(self, a, s, c, **kw):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, a, s, c, **kw):
            self.times.append(time.perf_counter() - self.t0)
            self.cpu.append(time.process_time() - self.c0)

    timer = Timer()
    with tempfile.TemporaryDirectory() as td:
        trainer = make_trl_trainer(args, base, args.batch * len(batches), [timer], td)
        trainer.train_dataset = Dataset.from_dict(dpo_rows(batches))
        rss_loaded = rss_now_mb()
        reset_hwm()
        trainer.train()
        n_train = sum(q.numel() for q in trainer.model.parameters() if q.requires_grad)
    times, cpu = timer.times[args.warmup :], timer.cpu[args.warmup :]
    extra = {"impl": "trl", "trainable_params": n_train}
    return times, cpu, args.batch * 2 * args.seq, rss_loaded, extra


def check_dpo(args, torch):
    """The PyTorch DPO loss (dpo_loss_torch) against TRL's DPOTrainer.compute_loss on the same
    batch and weights (LoRA B set to random values so that policy and reference differ)."""
    base = build_base_model(args)
    batch = dpo_batches(args, base.config.vocab_size, torch, n=1)[0]
    with tempfile.TemporaryDirectory() as td:
        trainer = make_trl_trainer(args, base, args.batch, [], td)
        model = trainer.model
        g = torch.Generator().manual_seed(args.seed + 1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(0.02 * torch.randn(p.shape, generator=g))
        rows = dpo_rows([batch])
        examples = [{k: rows[k][j] for k in rows} for j in range(args.batch)]
        inputs = trainer.data_collator(examples)
        with torch.no_grad():
            theirs = trainer.compute_loss(model, inputs).item()
            ours = dpo_loss_torch(model, batch, args.beta, torch).item()
    rel = abs(ours - theirs) / max(abs(theirs), 1e-12)
    print(json.dumps({"check": "dpo_loss_vs_trl", "torch": ours, "trl": theirs, "rel_diff": rel}))
    ok = rel < 1e-4 and abs(ours - 0.6931471805599453) > 1e-3
    print("DPO losses agree" if ok else "DPO LOSSES DISAGREE (or policy == reference)")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="Hugging Face llama model directory (made by --prepare)")
    ap.add_argument("--prepare", metavar="GGUF", help="write --model DIR from this llama GGUF, then exit")
    ap.add_argument("--tfm", default=os.environ.get("TFM", "build/tools/tfm"), help="the tfm CLI (tfm convert)")
    ap.add_argument("--check-logits", action="store_true", help="compare --model's logits to llama-cpp-python's")
    ap.add_argument("--check-dpo", action="store_true", help="compare the PyTorch DPO loss to TRL's")
    ap.add_argument("--gguf", help="the GGUF --model was prepared from (for --check-logits)")
    ap.add_argument("--llama-python", default=os.environ.get("TFM_LLAMA_PYTHON", "python3"))
    ap.add_argument("--llama-logits", metavar="GGUF", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--task", choices=["lora", "qlora", "full", "dpo"], default="lora",
                    help="qlora: the lora step on an NF4 base (bitsandbytes CPU backend); full: every "
                    "parameter trains")
    ap.add_argument("--dpo-impl", choices=["auto", "trl", "torch"], default="auto",
                    help="auto: TRL's DPOTrainer when trl imports, else the loss written in PyTorch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4, help="sequences (lora) or preference pairs (dpo)")
    ap.add_argument("--seq", type=int, default=256, help="tokens per sequence (dpo: prompt + response)")
    ap.add_argument("--prompt-len", type=int, default=None, help="dpo prompt tokens (default seq / 2)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping (0: none)")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=32.0)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--attn", default="sdpa", help="transformers attn_implementation (sdpa|eager)")
    ap.add_argument("--double-quant", action="store_true", help="qlora: quantize the NF4 scales too")
    ap.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing (off by default)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    args = ap.parse_args()

    if args.llama_logits:
        llama_logits(args.llama_logits, args.out)
        return 0
    if args.prepare:
        if not args.model:
            ap.error("--prepare needs --model DIR")
        prepare(args.prepare, args.model, args.tfm)
        return 0
    if not args.model:
        ap.error("--model DIR is required")
    if args.check_logits:
        if not args.gguf:
            ap.error("--check-logits needs --gguf (the GGUF the model was prepared from)")
        return check_logits(args.model, args.llama_python, args.tfm, args.gguf)
    if args.steps < 1 or args.warmup < 0 or args.batch < 1 or args.seq < 2 or args.threads < 1:
        ap.error("--steps, --batch, --threads must be >= 1, --seq >= 2, --warmup >= 0")
    if args.prompt_len is None:
        args.prompt_len = args.seq // 2
    if args.task == "dpo" and not 0 < args.prompt_len < args.seq:
        ap.error("--prompt-len must be in (0, seq)")

    # Threading must be fixed before torch (and its OpenMP runtime) loads. PASSIVE: on 2 shared
    # cores torch's OpenMP threads spinning at barriers cost more than they gain (bench/e2e/run.sh).
    n = str(args.threads)
    for k in ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"]:
        os.environ[k] = n
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.manual_seed(args.seed)
    if args.check_dpo:
        args.task = "dpo"
        return check_dpo(args, torch)

    if args.task in ("lora", "qlora", "full"):
        peer = {"lora": "torch+peft", "qlora": "torch+peft+bnb-nf4", "full": "torch"}[args.task]
        times, cpu, tokens, rss_loaded, extra = run_lora(args, torch)
    else:
        impl = args.dpo_impl
        if impl == "auto":
            try:
                import trl  # noqa: F401

                impl = "trl"
            except Exception:  # noqa: BLE001 - TRL absent or broken: fall back
                impl = "torch"
        if impl == "trl":
            peer = "trl-dpotrainer+peft"
            times, cpu, tokens, rss_loaded, extra = run_dpo_trl(args, torch)
        else:
            peer = "torch-dpo+peft"
            times, cpu, tokens, rss_loaded, extra = run_dpo_torch(args, torch)

    med = statistics.median(times)
    rec = {
        "peer": peer,
        "task": args.task,
        "threads": args.threads,
        "batch": args.batch,
        "seq": args.seq,
        **({"prompt_len": args.prompt_len} if args.task == "dpo" else {}),
        **({"rank": args.rank, "alpha": args.alpha} if args.task != "full" else {}),
        "max_grad_norm": args.max_grad_norm,
        "grad_ckpt": args.grad_ckpt,
        **({"double_quant": args.double_quant} if args.task == "qlora" else {}),
        "tokens_per_step": tokens,
        "tokens_per_s": tokens / med,
        "step_s_median": med,
        "step_s_all": [round(t, 4) for t in times],
        "cpu_s_median": statistics.median(cpu),
        "peak_rss_mb": max(PEAK_BEFORE_RESET[0], peak_rss_mb()),
        "peak_rss_steps_mb": vm_hwm_mb(),
        "rss_loaded_mb": rss_loaded,
        **extra,
        "versions": versions(),
    }
    if args.json:
        print(json.dumps(rec))
    else:
        for k, v in rec.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
