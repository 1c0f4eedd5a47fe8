#!/usr/bin/env python3
"""Soak test of `tfm serve`: continuous load on loopback, RSS sampled, growth reported.

    python3 bench/serve/soak.py TFM_BINARY MODEL.gguf [--minutes 10] [--clients 8]
                                [--parallel 8] [--threads 2] [--interval 10]

Starts `tfm serve` on 127.0.0.1, keeps `--clients` client threads sending chat completions
(random lengths: 16-200 prompt words, max_tokens 8-96, streamed or not, every tenth one cancelled
by closing the connection mid-stream) for `--minutes`, samples the server's resident set size
(/proc/PID/status VmRSS) every `--interval` seconds, and prints the samples, the requests served,
and the growth of RSS from the first sample after warm-up (the first minute) to the last.
Bounded: it stops after `--minutes` whatever happens, and SIGTERMs the server.
Exit status 1 when the RSS grew by more than 5% after warm-up, or a request failed.
"""
import argparse
import http.client
import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time

WORDS = ("the quick brown fox jumps over the lazy dog while seven wizards quietly judge "
         "boxing matches and a sphinx of black quartz hears my vow").split()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def client(port, stop, counts, lock, seed):
    rng = random.Random(seed)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/v1/models")
    model = json.loads(c.getresponse().read())["data"][0]["id"]
    while not stop.is_set():
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(16, 200)))
        stream = rng.random() < 0.5
        cancel = stream and rng.random() < 0.2
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": words}],
                           "max_tokens": rng.randint(8, 96), "stream": stream,
                           "temperature": rng.choice([0, 0.8])})
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            c.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            r = c.getresponse()
            if r.status != 200:
                with lock:
                    counts["failed"] += 1
                r.read()
                continue
            if cancel:
                r.readline()
                c.close()  # the server must cancel the request and free its blocks
                with lock:
                    counts["cancelled"] += 1
                continue
            r.read()
            with lock:
                counts["ok"] += 1
        except OSError:
            with lock:
                counts["failed"] += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tfm")
    ap.add_argument("model")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--interval", type=float, default=10)
    a = ap.parse_args()
    port = free_port()
    srv = subprocess.Popen([a.tfm, "serve", "-m", a.model, "--port", str(port), "--parallel",
                            str(a.parallel), "--ctx", "512", "-t", str(a.threads)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                break
        except OSError:
            time.sleep(0.5)
    stop, lock = threading.Event(), threading.Lock()
    counts = {"ok": 0, "cancelled": 0, "failed": 0}
    ts = [threading.Thread(target=client, args=(port, stop, counts, lock, i), daemon=True)
          for i in range(a.clients)]
    for t in ts:
        t.start()
    t0, samples = time.time(), []
    try:
        while time.time() - t0 < a.minutes * 60:
            time.sleep(a.interval)
            samples.append((time.time() - t0, rss_kib(srv.pid)))
            print(f"{samples[-1][0]:7.0f} s  RSS {samples[-1][1] / 1024:8.1f} MiB  {counts}",
                  flush=True)
    finally:
        stop.set()
        for t in ts:
            t.join(timeout=310)
        srv.send_signal(signal.SIGTERM)
        code = srv.wait(120)
    warm = [s for s in samples if s[0] >= 60] or samples
    growth = (warm[-1][1] - warm[0][1]) / warm[0][1] if warm and warm[0][1] else 0.0
    print(f"requests: {counts}; RSS after warm-up {warm[0][1] / 1024:.1f} MiB -> "
          f"{warm[-1][1] / 1024:.1f} MiB ({100 * growth:+.2f}%); server exit {code}")
    sys.exit(1 if growth > 0.05 or counts["failed"] or code != 0 else 0)


if __name__ == "__main__":
    main()
