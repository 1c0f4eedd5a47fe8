#!/usr/bin/env python3
"""End-to-end test of `tfm serve` with the official `openai` Python client.

usage: serve_e2e_test.py TFM_BINARY

Starts `tfm serve` on 127.0.0.1 (port 0: the server picks a free port and prints it) with
SmolLM2-135M-Instruct and checks, against independent references where there is one:
  - /v1/models lists the model;
  - greedy completions (stream and not) equal `tfm generate --temp 0` (the single-sequence
    session, infer/session.hpp: another code path than the paged, batched engine), both with
    --dequantize (f32 weights: see the comment where the server starts);
  - greedy chat completions (stream and not) equal `tfm chat --temp 0` (the same template
    rendered by the same interpreter, but a session instead of the engine);
  - stop strings cut the text before the stop (the greedy text is known), max_tokens ends with
    finish_reason "length" and usage.completion_tokens == max_tokens;
  - 8 concurrent clients all complete, each with its solo greedy text (batch invariance);
  - logprobs (chat and completions) and response_format json_object;
  - bad inputs over raw HTTP: malformed JSON, 401, 404 (path, model), 405, 400s naming the field,
    a prompt longer than the context;
  - /metrics parses as Prometheus text, and its counters add up;
  - a client that disconnects mid-stream: its request is cancelled and, without the prefix cache,
    the KV blocks in use return to 0;
  - SIGTERM while a request streams: the request completes, new requests get 503, exit status 0.
Prints "TFM_SKIP: ..." and exits 0 when the model or the `openai` package is missing.
"""
import glob
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

KEY = "test-key-123"


def skip(why):
    print("TFM_SKIP: " + why)
    sys.exit(0)


def find_model():
    env = os.environ.get("TFM_SMOLLM2_GGUF")
    if env and os.path.exists(env):
        return env
    home = os.path.expanduser("~/.cache/typeformer/models/smollm2-135m-instruct")
    found = sorted(glob.glob(os.path.join(home, "*.gguf")))
    return found[0] if found else None


class Server:
    """A `tfm serve` process; its stderr is collected on a thread."""

    def __init__(self, tfm, model, *extra):
        self.cmd = [tfm, "serve", "-m", model, "--host", "127.0.0.1", "--port", "0",
                    "--ctx", "512", "-t", "2", *extra]
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.lines = []
        self.port = None
        ready = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.lines.append(line.rstrip("\n"))
                m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    ready.set()
            ready.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        if not ready.wait(180) or self.port is None:
            self.proc.kill()
            raise AssertionError("tfm serve did not start:\n" + "\n".join(self.lines))
        self.base = "http://127.0.0.1:%d" % self.port

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(120)


def call(server, method, path, body=None, key=KEY, raw=None, headers=None):
    """(status, parsed JSON or text) of one request."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(server.base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", "Bearer " + key)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=300) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def check_error(status, body, want_status, want_param=None, want_code=None, what=""):
    assert status == want_status, (what, status, body)
    assert isinstance(body, dict) and "error" in body, (what, body)
    err = body["error"]
    assert set(err) >= {"message", "type", "param", "code"}, (what, err)
    assert isinstance(err["message"], str) and err["message"], (what, err)
    if want_param is not None:
        assert err["param"] == want_param, (what, err)
    if want_code is not None:
        assert err["code"] == want_code, (what, err)


def parse_metrics(text):
    """{(name, frozenset(labels)): value}, checking the line syntax and HELP/TYPE order."""
    out, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)', line)
        assert m, "bad metrics line: " + line
        name, labels, value = m.group(1), m.group(2), m.group(3)
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or base in typed, "sample before its TYPE: " + line
        lab = frozenset(re.findall(r'(\w+)="([^"]*)"', labels or ""))
        out[(name, lab)] = float(value.replace("+Inf", "inf"))
    return out


def metric(m, name, **labels):
    return m.get((name, frozenset(labels.items())), 0.0)


def tfm_generate(tfm, model, prompt, n):
    r = subprocess.run([tfm, "generate", "-m", model, "-p", prompt, "-n", str(n), "--temp", "0",
                        "--ctx", "512", "-t", "2", "--dequantize"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("\n")
    return r.stdout[:-1]


def tfm_chat(tfm, model, message, n):
    r = subprocess.run([tfm, "chat", "-m", model, "-n", str(n), "--temp", "0", "--ctx", "512",
                        "-t", "2", "--dequantize"], input=message + "\n", capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("\n")
    return r.stdout[:-1]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    tfm = sys.argv[1]
    model = find_model()
    if not model:
        skip("SmolLM2-135M-Instruct is not cached (scripts/fetch-models)")
    try:
        import openai
    except ImportError:
        skip("the `openai` Python package is not installed")
    model_id = os.path.basename(model)

    # --dequantize on both sides: with packed quantized weights the session's decode (integer
    # dot products over quantized activations) and the engine's batched rows take different
    # kernels, whose rounding may flip a near-tie; with f32 weights both are plain f32 math.
    srv = Server(tfm, model, "--parallel", "4", "--api-key", KEY, "--dequantize")
    try:
        client = openai.OpenAI(base_url=srv.base + "/v1", api_key=KEY, max_retries=0,
                               timeout=300)
        # ---- models
        models = client.models.list().data
        assert [m.id for m in models] == [model_id], models
        print("models ok")

        # ---- greedy completions against `tfm generate`
        prompt, n = "The capital of France is", 24
        ref = tfm_generate(tfm, model, prompt, n)
        c = client.completions.create(model=model_id, prompt=prompt, max_tokens=n, temperature=0)
        assert c.object == "text_completion"
        got = c.choices[0].text
        assert got == ref, (got, ref)
        assert c.choices[0].finish_reason in ("length", "stop")
        if c.choices[0].finish_reason == "length":
            assert c.usage.completion_tokens == n, c.usage
        assert c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens
        chunks = list(client.completions.create(model=model_id, prompt=prompt, max_tokens=n,
                                                temperature=0, stream=True))
        assert "".join(ch.choices[0].text for ch in chunks) == ref
        assert chunks[-1].choices[0].finish_reason == c.choices[0].finish_reason
        assert all(ch.choices[0].finish_reason is None for ch in chunks[:-1])
        print("completion ok: %r" % got)

        # ---- stop strings and max_tokens
        words = [w for w in re.findall(r"\w{3,}", ref) if ref.index(w) > 0]
        if words:
            stop = words[0]
            s = client.completions.create(model=model_id, prompt=prompt, max_tokens=n,
                                          temperature=0, stop=[stop, "@@@@"])
            assert s.choices[0].text == ref[:ref.index(stop)], (s.choices[0].text, stop)
            assert s.choices[0].finish_reason == "stop"
            st = list(client.completions.create(model=model_id, prompt=prompt, max_tokens=n,
                                                temperature=0, stop=stop, stream=True))
            assert "".join(ch.choices[0].text for ch in st) == ref[:ref.index(stop)]
        short = client.completions.create(model=model_id, prompt=prompt, max_tokens=3,
                                          temperature=0)
        assert short.choices[0].finish_reason == "length"
        assert short.usage.completion_tokens == 3
        print("stop / length ok")

        # ---- chat against `tfm chat`
        question, cn = "What is the capital of France?", 40
        chat_ref = tfm_chat(tfm, model, question, cn)
        msgs = [{"role": "user", "content": question}]
        r = client.chat.completions.create(model=model_id, messages=msgs, max_tokens=cn,
                                           temperature=0)
        assert r.object == "chat.completion"
        assert r.choices[0].message.role == "assistant"
        assert r.choices[0].message.content == chat_ref, (r.choices[0].message.content, chat_ref)
        chunks = list(client.chat.completions.create(
            model=model_id, messages=msgs, max_tokens=cn, temperature=0, stream=True,
            stream_options={"include_usage": True}))
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens
        assert chunks[-2].choices[0].finish_reason == r.choices[0].finish_reason
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert text == chat_ref, (text, chat_ref)
        print("chat ok: %r" % chat_ref)

        # ---- logprobs
        lp = client.chat.completions.create(model=model_id, messages=msgs, max_tokens=8,
                                            temperature=0, logprobs=True, top_logprobs=3)
        content = lp.choices[0].logprobs.content
        assert len(content) >= 1
        assert "".join(e.token for e in content) == lp.choices[0].message.content
        for e in content:
            assert len(e.top_logprobs) == 3
            assert e.top_logprobs[0].token == e.token  # greedy: the most likely token
            assert abs(e.top_logprobs[0].logprob - e.logprob) < 1e-5
            assert e.logprob <= 0
        clp = client.completions.create(model=model_id, prompt=prompt, max_tokens=4,
                                        temperature=0, logprobs=2)
        assert len(clp.choices[0].logprobs.tokens) == 4
        assert len(clp.choices[0].logprobs.top_logprobs[0]) == 2
        print("logprobs ok")

        # ---- response_format json_object
        j = client.chat.completions.create(
            model=model_id, temperature=0, max_tokens=120,
            messages=[{"role": "user", "content": "Give me a JSON object with a name and an age."}],
            response_format={"type": "json_object"})
        if j.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(j.choices[0].message.content), dict)
        else:
            assert j.choices[0].message.content.lstrip().startswith("{")
        print("json_object ok (%s): %r" % (j.choices[0].finish_reason, j.choices[0].message.content))

        # ---- 8 concurrent clients, each equal to its solo greedy text
        prompts = ["Once upon a time", "The best way to learn", "In 1969,", "Water boils at",
                   "My favourite food is", "The sun is", "Python is a", "To be or not"]
        solo = [client.completions.create(model=model_id, prompt=p, max_tokens=16,
                                          temperature=0).choices[0].text for p in prompts]
        results = [None] * len(prompts)

        def worker(i):
            cl = openai.OpenAI(base_url=srv.base + "/v1", api_key=KEY, max_retries=0,
                               timeout=300)
            if i % 2:
                results[i] = "".join(ch.choices[0].text for ch in cl.completions.create(
                    model=model_id, prompt=prompts[i], max_tokens=16, temperature=0, stream=True))
            else:
                results[i] = cl.completions.create(model=model_id, prompt=prompts[i],
                                                   max_tokens=16, temperature=0).choices[0].text

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        assert results == solo, list(zip(results, solo))
        print("8 concurrent ok")

        # ---- bad inputs over raw HTTP
        st, body = call(srv, "GET", "/health", key=None)
        assert st == 200 and body == {"status": "ok"}, (st, body)
        check_error(*call(srv, "POST", "/v1/completions", raw=b"{\"prompt\": "), 400,
                    what="malformed JSON")
        check_error(*call(srv, "POST", "/v1/completions", {"prompt": "x"}, key=None), 401,
                    want_code="invalid_api_key", what="no key")
        check_error(*call(srv, "POST", "/v1/completions", {"prompt": "x"}, key="wrong"), 401,
                    want_code="invalid_api_key", what="wrong key")
        check_error(*call(srv, "GET", "/v1/models", key="wrong"), 401, what="models, wrong key")
        check_error(*call(srv, "GET", "/v2/nothing"), 404, what="unknown path")
        check_error(*call(srv, "GET", "/v1/completions"), 405, what="GET on a POST path")
        check_error(*call(srv, "POST", "/v1/models", {}), 405, what="POST on a GET path")
        check_error(*call(srv, "POST", "/v1/completions", {"model": "gpt-4", "prompt": "x"}), 404,
                    "model", "model_not_found", what="unknown model")
        for field, value in [("max_tokens", -1), ("max_tokens", 0), ("max_tokens", 10**9),
                             ("max_tokens", "5"), ("temperature", "hot"), ("top_p", 7),
                             ("n", 2), ("stop", 5), ("logit_bias", {"x": 1}),
                             ("stream", "yes"), ("logprobs", 99)]:
            check_error(*call(srv, "POST", "/v1/completions", {"prompt": "x", field: value}),
                        400, field, what="%s=%r" % (field, value))
        check_error(*call(srv, "POST", "/v1/completions", {"prompt": ["a", "b"]}), 400, "prompt")
        check_error(*call(srv, "POST", "/v1/completions", {"prompt": [5] * 600}), 400, "prompt",
                    "context_length_exceeded", what="prompt longer than the context")
        check_error(*call(srv, "POST", "/v1/chat/completions",
                          {"messages": [{"role": "user", "content": "x " * 700}]}), 400,
                    "messages", "context_length_exceeded", what="chat longer than the context")
        check_error(*call(srv, "POST", "/v1/chat/completions", {"messages": "hi"}), 400,
                    "messages")
        check_error(*call(srv, "POST", "/v1/embeddings", {"input": "x"}), 400,
                    what="embeddings on a decoder")
        try:  # the client's own exception types for the same errors
            client.completions.create(model=model_id, prompt="x", max_tokens=-3)
            raise AssertionError("max_tokens=-3 accepted")
        except openai.BadRequestError as e:
            assert e.status_code == 400
        try:
            client.models.retrieve("nope")
            raise AssertionError("unknown model retrieved")
        except openai.NotFoundError:
            pass
        print("bad inputs ok")

        # ---- /metrics
        st, text = call(srv, "GET", "/metrics")
        assert st == 200, st
        m = parse_metrics(text)
        finished = sum(metric(m, "tfm_requests_finished_total", finish_reason=r)
                       for r in ("stop", "length", "cancelled", "timeout", "error"))
        assert finished == metric(m, "tfm_requests_submitted_total") > 0, text
        assert metric(m, "tfm_requests_running") == 0
        assert metric(m, "tfm_generated_tokens_total") > 0
        assert metric(m, "tfm_time_to_first_token_seconds_count") > 0
        assert metric(m, "tfm_time_to_first_token_seconds_bucket", le="+Inf") == \
            metric(m, "tfm_time_to_first_token_seconds_count")
        assert metric(m, "tfm_kv_blocks_total") > 0
        assert 0 <= metric(m, "tfm_kv_cache_usage_ratio") <= 1
        print("metrics ok")
    finally:
        code = srv.stop()
    assert code == 0, (code, srv.lines)

    # ---- disconnect mid-stream, a full queue, and SIGTERM with a request running (one
    # sequence at a time, one waiting at most; no prefix cache: the blocks in use must come
    # back to 0)
    srv = Server(tfm, model, "--parallel", "1", "--max-queue", "1", "--no-prefix-cache")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        conn.request("POST", "/v1/completions", json.dumps(
            {"prompt": "Tell me a long story.", "max_tokens": 400, "temperature": 0,
             "ignore_eos": True, "stream": True}), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        got = b""
        while got.count(b"data: ") < 3:
            got += resp.read1(4096)
        conn.sock.close()  # the client goes away mid-stream
        conn.close()
        deadline = time.time() + 60
        while True:
            m = parse_metrics(call(srv, "GET", "/metrics", key=None)[1])
            if (metric(m, "tfm_requests_running") == 0 and
                    metric(m, "tfm_requests_finished_total", finish_reason="cancelled") == 1):
                break
            assert time.time() < deadline, "the request was not cancelled"
            time.sleep(0.2)
        assert metric(m, "tfm_kv_blocks_used") == 0, m
        assert metric(m, "tfm_http_stream_disconnects_total") == 1
        assert metric(m, "tfm_generated_tokens_total") < 400
        print("disconnect ok: cancelled after %d tokens" % metric(m, "tfm_generated_tokens_total"))

        # A full queue: one request runs, one waits, the next gets 429.
        busy = []

        def waiting_request():
            busy.append(call(srv, "POST", "/v1/completions",
                             {"prompt": "Hello", "max_tokens": 300, "ignore_eos": True},
                             key=None)[0])

        ts = [threading.Thread(target=waiting_request) for _ in range(2)]
        for t in ts:
            t.start()
            time.sleep(0.2)
        deadline = time.time() + 60
        while True:
            m = parse_metrics(call(srv, "GET", "/metrics", key=None)[1])
            if metric(m, "tfm_requests_running") == 1 and metric(m, "tfm_requests_waiting") == 1:
                break
            assert time.time() < deadline and len(busy) < 2, "the queue did not fill"
            time.sleep(0.02)
        check_error(*call(srv, "POST", "/v1/completions", {"prompt": "x"}, key=None), 429,
                    want_code="queue_full", what="full queue")
        for t in ts:
            t.join(300)
        assert busy == [200, 200], busy
        print("full queue ok: 429")

        # SIGTERM while a stream runs: it completes; new requests are refused; exit 0.
        out = {}

        def long_request():
            cl = openai.OpenAI(base_url=srv.base + "/v1", api_key="none", max_retries=0,
                               timeout=300)
            chunks = list(cl.completions.create(model=model_id, prompt="Count: 1, 2, 3,",
                                                max_tokens=200, temperature=0, stream=True,
                                                extra_body={"ignore_eos": True}))
            out["finish"] = chunks[-1].choices[0].finish_reason
            out["text"] = "".join(ch.choices[0].text for ch in chunks)

        m = parse_metrics(call(srv, "GET", "/metrics", key=None)[1])
        before = metric(m, "tfm_generated_tokens_total")
        t = threading.Thread(target=long_request)
        t.start()
        deadline = time.time() + 60
        while True:  # until the long request runs and has its first tokens
            m = parse_metrics(call(srv, "GET", "/metrics", key=None)[1])
            if (metric(m, "tfm_requests_running") >= 1 and
                    metric(m, "tfm_generated_tokens_total") > before):
                break
            assert time.time() < deadline, "the long request did not start"
            time.sleep(0.05)
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        try:
            st, body = call(srv, "POST", "/v1/completions", {"prompt": "x", "max_tokens": 2},
                            key=None)
            check_error(st, body, 503, want_code="shutting_down", what="request while draining")
            refused = "503"
        except (urllib.error.URLError, ConnectionError):
            refused = "connection refused"  # already stopped listening
        t.join(300)
        assert out.get("finish") == "length", out
        code = srv.proc.wait(120)
        assert code == 0, (code, srv.lines)
        print("SIGTERM ok: the running request finished (%r), a new one got %s, exit 0" %
              (out["finish"], refused))
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()
    # ---- embeddings with the BERT encoder, against `tfm embed` (same library call)
    bert = os.path.expanduser("~/.cache/typeformer/models/all-minilm-l6-v2")
    if os.path.exists(os.path.join(bert, "config.json")):
        texts = ["A sentence.", "Another, rather different one!"]
        r = subprocess.run([tfm, "embed", "-m", bert, "-t", "2"], input="\n".join(texts) + "\n",
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        ref = [json.loads(line) for line in r.stdout.splitlines()]
        srv = Server(tfm, bert)
        try:
            cl = openai.OpenAI(base_url=srv.base + "/v1", api_key="none", max_retries=0)
            e = cl.embeddings.create(model="all-minilm-l6-v2", input=texts)  # base64 on the wire
            assert [d.index for d in e.data] == [0, 1]
            for d, want in zip(e.data, ref):
                assert len(d.embedding) == len(want) == 384
                assert max(abs(a - b) for a, b in zip(d.embedding, want)) < 1e-6
            st, body = call(srv, "POST", "/v1/embeddings", {"input": texts[0],
                                                            "encoding_format": "float"}, key=None)
            assert st == 200, (st, body)
            assert max(abs(a - b) for a, b in zip(body["data"][0]["embedding"], ref[0])) < 1e-6
            assert body["usage"]["prompt_tokens"] > 0
            check_error(*call(srv, "POST", "/v1/completions", {"prompt": "x"}, key=None), 400,
                        what="completions on an encoder")
            print("embeddings ok")
        finally:
            assert srv.stop() == 0, srv.lines
    else:
        print("embeddings skipped: all-minilm-l6-v2 is not cached")
    print("serve e2e: all passed")


if __name__ == "__main__":
    main()
