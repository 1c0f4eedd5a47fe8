#!/usr/bin/env python3
"""Throughput and latency of `tfm serve` against llama.cpp's llama-server, same model, same run.

    python3 bench/serve/serve_vs_llamacpp.py TFM_BINARY MODEL.gguf TEXT
        [--llama-server PATH] [--requests 32] [--concurrency 32 8] [--prompt 128] [--gen 128]
        [--parallel 32] [--threads 2] [--serial] [--repeats 1]

Both servers are started here on 127.0.0.1 with the same model, threads and parallel slots
(llama-server: -np N -c N*(prompt+gen+64) -cb, so every slot holds a whole request; tfm serve:
--parallel N --ctx prompt+gen+64), then a client sends `--requests` chat completions with
`concurrency` of them in flight at once, each a user message of `--prompt` tokens of TEXT
(different windows, so no prefix is shared), asking for exactly `--gen` new tokens
(max_tokens = gen and "ignore_eos": true, an extension both servers accept), streamed. Measured
on the client: total generated tokens / wall time (the tokens are counted from the streamed
chunks and checked against the usage the server reports), time to first token and inter-token
latency percentiles. With --serial, tfm serve also runs the same requests one at a time
(concurrency 1) for the batching speed-up. Prints a Markdown table.

llama-server: build it from the llama.cpp vendored by llama-cpp-python (bench/README.md says
how); pass its path with --llama-server or leave it out to measure tfm serve alone.
"""
import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, proc, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            r = c.getresponse()
            r.read()
            if r.status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit("server did not become ready")


def model_id(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/v1/models")
    return json.loads(c.getresponse().read())["data"][0]["id"]


def one_request(port, messages, gen, out, model):
    body = json.dumps({"model": model, "messages": messages, "max_tokens": gen, "stream": True,
                       "temperature": 0, "ignore_eos": True,
                       "stream_options": {"include_usage": True}})
    t0 = time.perf_counter()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        out.append({"error": f"{r.status} {r.read()[:200]!r}"})
        return
    times, usage, buf = [], None, b""
    while True:
        line = r.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        ev = json.loads(data)
        if ev.get("usage"):
            usage = ev["usage"]
        for ch in ev.get("choices", []):
            delta = ch.get("delta", {})
            if delta.get("content"):
                times.append(time.perf_counter())
    out.append({"t0": t0, "times": times, "end": time.perf_counter(), "usage": usage})


def load(port, prompts, gen, concurrency):
    results, lock = [], threading.Lock()
    model = model_id(port)
    todo = list(range(len(prompts)))
    t0 = time.perf_counter()

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop(0)
            res = []
            one_request(port, [{"role": "user", "content": prompts[i]}], gen, res, model)
            with lock:
                results.extend(res)

    ts = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        sys.exit(f"requests failed: {errors[:3]}")
    toks = sum(r["usage"]["completion_tokens"] if r["usage"] else len(r["times"]) for r in results)
    ttft = [r["times"][0] - r["t0"] for r in results if r["times"]]
    itl = [b - a for r in results for a, b in zip(r["times"], r["times"][1:])]
    q = lambda v, p: sorted(v)[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))] if v else float("nan")
    return {"tok_s": toks / wall, "tokens": toks, "wall": wall, "ttft50": q(ttft, 0.5),
            "ttft99": q(ttft, 0.99), "itl50": q(itl, 0.5), "itl99": q(itl, 0.99)}


def start(cmd, port, env):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wait_ready(port, p)
    return p


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(60)
    except subprocess.TimeoutExpired:
        p.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tfm")
    ap.add_argument("model")
    ap.add_argument("text")
    ap.add_argument("--llama-server")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[32, 8])
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--parallel", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--serial", action="store_true")
    ap.add_argument("--omp-wait", default="passive",
                    help="OMP_WAIT_POLICY for both servers (passive, active; 'unset' leaves it)")
    a = ap.parse_args()

    # Prompts: windows of ~`prompt` tokens of TEXT (4 characters a token is near enough for
    # English; the usage the servers report gives the real count).
    text = open(a.text, encoding="utf-8", errors="replace").read()
    chars = a.prompt * 4
    prompts = [text[i * chars:(i + 1) * chars] for i in range(a.requests)]
    env = dict(os.environ)
    if a.omp_wait == "unset":
        env.pop("OMP_WAIT_POLICY", None)
    else:
        env["OMP_WAIT_POLICY"] = a.omp_wait
    ctx = a.prompt + a.gen + 64
    rows = []
    servers = [("typeformer", lambda port: [a.tfm, "serve", "-m", a.model, "--port", str(port),
                                            "--parallel", str(a.parallel), "--ctx", str(ctx),
                                            "-t", str(a.threads)])]
    if a.llama_server:
        servers.append(("llama.cpp", lambda port: [a.llama_server, "-m", a.model, "--port",
                                                   str(port), "-np", str(a.parallel), "-c",
                                                   str(ctx * a.parallel), "-t", str(a.threads),
                                                   "-tb", str(a.threads), "-cb", "--no-webui"]))
    for name, cmd in servers:
        port = free_port()
        p = start(cmd(port), port, env)
        try:
            load(port, prompts[:2], 4, 2)  # warm-up
            for c in a.concurrency:
                rows.append((name, c, load(port, prompts, a.gen, c)))
            if a.serial and name == "typeformer":
                rows.append((name, 1, load(port, prompts, a.gen, 1)))
        finally:
            stop(p)
    print(f"| server | concurrent | tok/s | tokens | wall s | TTFT p50 / p99 s | ITL p50 / p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for name, c, r in rows:
        print(f"| {name} | {c} | {r['tok_s']:.1f} | {r['tokens']} | {r['wall']:.1f} | "
              f"{r['ttft50']:.3f} / {r['ttft99']:.3f} | {1e3 * r['itl50']:.1f} / "
              f"{1e3 * r['itl99']:.1f} |")
    ours = {c: r for n, c, r in rows if n == "typeformer"}
    peer = {c: r for n, c, r in rows if n == "llama.cpp"}
    for c in a.concurrency:
        if c in ours and c in peer:
            print(f"ratio at {c} concurrent (tok/s, ours / llama.cpp): "
                  f"{ours[c]['tok_s'] / peer[c]['tok_s']:.2f}x")
    if 1 in ours and a.concurrency[0] in ours:
        print(f"batching speed-up ({a.concurrency[0]} concurrent / one at a time): "
              f"{ours[a.concurrency[0]]['tok_s'] / ours[1]['tok_s']:.2f}x")


if __name__ == "__main__":
    main()
