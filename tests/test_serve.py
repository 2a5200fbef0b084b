"""`edge-quamba serve` in this process (uvicorn in a thread, real sockets on loopback), driven by the real `openai`
client (plain, streamed, chat) and by httpx for the requests a client gets wrong.

The demo model runs on the ref backend. A second server wraps the same backend so that every decode step takes
SLOW_STEP seconds and EOS is never chosen, so that queueing, disconnects and timeouts happen on a known clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time

import httpx
import openai
import pytest
import torch
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from edge_quamba.runtime.generate import generate
from edge_quamba.runtime.sampling import GREEDY
from edge_quamba.serve.app import create_app
from edge_quamba.serve.engine import Engine
from edge_quamba.serve.schemas import Limits
from edge_quamba.serve.server import bind, load_served_model, url_of

PROMPT = "The Python interpreter"
SLOW_STEP = 0.02


@contextlib.contextmanager
def running(served):
    """Serve ``served`` on a free loopback port in a thread; yields the base URL (http://127.0.0.1:PORT)."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(served), log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        assert not thread.is_alive()


@pytest.fixture(scope="module")
def served():
    return load_served_model(model=None, backend="ref", limits=Limits(max_prompt_tokens=64, max_tokens=256,
                                                                     max_body_bytes=4096))


@pytest.fixture(scope="module")
def url(served):
    with running(served) as base:
        yield base


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def expected(served, prompt: str, max_tokens: int):
    """What `edge-quamba run --temperature 0` generates: the generation loop called directly."""
    tok = served.engine.tokenizer
    return generate(served.engine.backend, tok, tok.encode(prompt), max_tokens, GREEDY)


# ------------------------------------------------------------------------------------------------------------
# The openai client


def test_completion_equals_the_generation_loop(served, client):
    want = expected(served, PROMPT, 12)
    got = client.completions.create(model="demo", prompt=PROMPT, max_tokens=12, temperature=0)
    print(repr(got.choices[0].text), got.usage)
    assert got.object == "text_completion" and got.model == "demo"
    assert got.choices[0].text == want.text
    assert got.choices[0].finish_reason == "length"
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (len(want.prompt_tokens), 12)
    assert got.usage.total_tokens == len(want.prompt_tokens) + 12


def test_streamed_completion_equals_the_whole_one(client):
    whole = client.completions.create(model="demo", prompt=PROMPT, max_tokens=16, temperature=0)
    chunks = list(client.completions.create(model="demo", prompt=PROMPT, max_tokens=16, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    texts = [c.choices[0].text for c in chunks if c.choices]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    print(texts)
    assert len(texts) > 2  # streamed in pieces, not at once
    assert "".join(texts) == whole.choices[0].text
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16
    assert len({c.id for c in chunks}) == 1


def test_chat_uses_the_plain_template(served, client):
    messages = [{"role": "system", "content": "You answer questions about Python."},
                {"role": "user", "content": "What is a list?"}]
    prompt = "System: You answer questions about Python.\n\nUser: What is a list?\n\nAssistant:"
    assert served.template.render(messages) == prompt
    want = expected(served, prompt, 24).text.split("\nUser:")[0]
    got = client.chat.completions.create(model="demo", messages=messages, max_tokens=24, temperature=0)
    print(repr(got.choices[0].message.content))
    assert got.object == "chat.completion"
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].message.content == want
    chunks = list(client.chat.completions.create(model="demo", messages=messages, max_tokens=24, temperature=0,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want
    assert chunks[-1].choices[0].finish_reason == got.choices[0].finish_reason


def test_seed_makes_sampling_reproducible(client):
    def sample(seed):
        return client.completions.create(model="demo", prompt=PROMPT, max_tokens=24, temperature=1.0, seed=seed,
                                         stream=False).choices[0].text

    first, again, other = sample(7), sample(7), sample(8)
    print(repr(first), repr(other))
    assert first == again
    assert first != other


@pytest.mark.parametrize("stream", [False, True])
def test_stop_sequences_cut_the_text(served, client, stream):
    full = expected(served, PROMPT, 24).text
    stop = full[20:26]  # from the middle of the greedy text
    want = full[:full.index(stop)]
    answer = client.completions.create(model="demo", prompt=PROMPT, max_tokens=24, temperature=0,
                                       stop=["never appears", stop], stream=stream)
    if stream:
        chunks = list(answer)
        text = "".join(c.choices[0].text for c in chunks)
        finish = chunks[-1].choices[0].finish_reason
    else:
        text, finish = answer.choices[0].text, answer.choices[0].finish_reason
    print(repr(stop), repr(text))
    assert text == want
    assert finish == "stop"


def test_prompt_as_token_ids(served, client):
    ids = served.engine.tokenizer.encode(PROMPT)
    by_ids = client.completions.create(model="demo", prompt=ids, max_tokens=8, temperature=0)
    by_text = client.completions.create(model="demo", prompt=PROMPT, max_tokens=8, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text


def test_models_health_and_metrics(url, client):
    assert [m.id for m in client.models.list()] == ["demo"]
    assert client.models.retrieve("demo").id == "demo"
    health = httpx.get(f"{url}/health").json()
    assert health == {"status": "ok", "model": "demo", "backend": "ref", "active": 0, "queued": 0}
    client.completions.create(model="demo", prompt=PROMPT, max_tokens=4, temperature=0)
    httpx.post(f"{url}/v1/completions", content=b"{")
    response = httpx.get(f"{url}/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(response.text) for s in family.samples}
    print({k: v for k, v in samples.items() if "bucket" not in k[0]})
    assert samples[("edge_quamba_requests_total", (("endpoint", "/v1/completions"), ("status", "200")))] >= 1
    assert samples[("edge_quamba_requests_total", (("endpoint", "/v1/completions"), ("status", "400")))] >= 1
    assert samples[("edge_quamba_errors_total", (("endpoint", "/v1/completions"),
                                                 ("type", "invalid_request_error")))] >= 1
    assert samples[("edge_quamba_queue_depth", ())] == 0
    assert samples[("edge_quamba_active_sequences", ())] == 0
    assert samples[("edge_quamba_time_to_first_token_seconds_count", ())] >= 1
    assert samples[("edge_quamba_time_per_output_token_seconds_count", ())] >= 1
    assert samples[("edge_quamba_generation_tokens_total", ())] >= 4


# ------------------------------------------------------------------------------------------------------------
# Requests a client gets wrong: a 4xx with an OpenAI error object, never a traceback or a 500

GOOD = {"model": "demo", "prompt": PROMPT, "max_tokens": 2}
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
BAD = [
    ("not json", "/v1/completions", b"{\"model\": ", 400, None, "not valid JSON"),
    ("NaN literal", "/v1/completions", b'{"model": "demo", "prompt": "a", "temperature": NaN}', 400, None,
     "not valid JSON"),
    ("invalid utf-8", "/v1/completions", b'{"model": "\xff"}', 400, None, "not valid JSON"),
    ("array body", "/v1/completions", [1, 2], 400, None, "JSON object"),
    ("no model", "/v1/completions", {"prompt": "a"}, 400, "model", "missing required parameter"),
    ("no prompt", "/v1/completions", {"model": "demo"}, 400, "prompt", "missing required parameter"),
    ("unknown model", "/v1/completions", {**GOOD, "model": "gpt-4"}, 404, "model", "does not exist"),
    ("unknown field", "/v1/completions", {**GOOD, "temprature": 1}, 400, "temprature", "unrecognized"),
    ("temperature too high", "/v1/completions", {**GOOD, "temperature": 2.5}, 400, "temperature", "less than"),
    ("temperature as string", "/v1/completions", {**GOOD, "temperature": "0.5"}, 400, "temperature", "number"),
    ("top_p zero", "/v1/completions", {**GOOD, "top_p": 0}, 400, "top_p", "greater than"),
    ("negative seed", "/v1/completions", {**GOOD, "seed": -1}, 400, "seed", "greater than"),
    ("max_tokens zero", "/v1/completions", {**GOOD, "max_tokens": 0}, 400, "max_tokens", "greater than"),
    ("max_tokens over the cap", "/v1/completions", {**GOOD, "max_tokens": 257}, 400, "max_tokens", "at most 256"),
    ("max_tokens float", "/v1/completions", {**GOOD, "max_tokens": 2.0}, 400, "max_tokens", "integer"),
    ("stream as string", "/v1/completions", {**GOOD, "stream": "yes"}, 400, "stream", "boolean"),
    ("n = 2", "/v1/completions", {**GOOD, "n": 2}, 400, "n", "not supported"),
    ("logprobs", "/v1/completions", {**GOOD, "logprobs": 5}, 400, "logprobs", "not supported"),
    ("five stops", "/v1/completions", {**GOOD, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "at most 4"),
    ("stop of numbers", "/v1/completions", {**GOOD, "stop": [1]}, 400, "stop", "string"),
    ("empty prompt", "/v1/completions", {**GOOD, "prompt": ""}, 400, "prompt", "empty"),
    ("prompt too long", "/v1/completions", {**GOOD, "prompt": "word " * 200}, 400, "prompt", "the limit is 64"),
    ("two prompts", "/v1/completions", {**GOOD, "prompt": ["a", "b"]}, 400, "prompt", "one prompt"),
    ("token id out of range", "/v1/completions", {**GOOD, "prompt": [1, 99999]}, 400, "prompt", "vocabulary"),
    ("stream_options without stream", "/v1/completions", {**GOOD, "stream_options": {"include_usage": True}}, 400,
     "stream_options", "stream"),
    ("no messages", "/v1/chat/completions", {"model": "demo", "messages": []}, 400, "messages", "at least 1"),
    ("tool role", "/v1/chat/completions", {**CHAT, "messages": [{"role": "tool", "content": "x"}]}, 400,
     "messages.0.role", "Input should be"),
    ("image part", "/v1/chat/completions",
     {**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400,
     "messages.0.content", None),
    ("tools", "/v1/chat/completions", {**CHAT, "tools": []}, 400, "tools", "unrecognized"),
    ("both token limits", "/v1/chat/completions", {**CHAT, "max_completion_tokens": 2}, 400, "max_tokens", "not both"),
    ("body too large", "/v1/completions", {**GOOD, "prompt": "x" * 5000}, 413, None, "larger than 4096 bytes"),
]


@pytest.mark.parametrize("case", BAD, ids=[case[0] for case in BAD])
def test_bad_request_gets_an_error_object(url, case):
    _, path, body, status, param, words = case
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = httpx.post(f"{url}{path}", **kwargs)
    print(response.status_code, response.text)
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert words is None or words in error["message"]
    assert "Traceback" not in response.text and "\n" not in error["message"]


def test_chunked_body_too_large_and_wrong_routes(url):
    def chunks():
        for _ in range(10):
            yield b" " * 1000  # no Content-Length: the limit holds while reading

    response = httpx.post(f"{url}/v1/completions", content=chunks())
    assert response.status_code == 413 and "larger than" in response.json()["error"]["message"]
    wrong_method = httpx.get(f"{url}/v1/completions")
    assert wrong_method.status_code == 405 and "not allowed" in wrong_method.json()["error"]["message"]
    assert "POST" in wrong_method.headers["allow"]
    missing = httpx.get(f"{url}/v1/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "no route /v1/nothing"


def test_openai_client_raises_its_own_errors(client):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt=PROMPT)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model="demo", prompt=PROMPT, temperature=3)


class Failing:
    """A backend whose model breaks: NaN logits (a one-line NumericsError) or a bug (any other exception)."""

    name = "failing"

    def __init__(self, bug: bool):
        self.bug = bug

    def prefill(self, tokens):
        if self.bug:
            raise RuntimeError("a bug deep inside")
        return torch.full((8192,), float("nan")), None


@pytest.mark.parametrize("bug", [False, True])
def test_a_failing_model_is_a_500_without_traceback_and_frees_the_slot(served, bug):
    broken = dataclasses.replace(served, engine=Engine(Failing(bug), served.engine.tokenizer))
    with running(broken) as base:
        for _ in range(2):  # the second is answered too: the slot was freed
            whole = httpx.post(f"{base}/v1/completions", json=GOOD, timeout=10)
            print(whole.text)
            assert whole.status_code == 500
            error = whole.json()["error"]
            assert error["type"] == "server_error" and "Traceback" not in whole.text
            assert ("see the server log" in error["message"]) == bug
            assert bug or "NaN logits" in error["message"]
        streamed = httpx.post(f"{base}/v1/completions", json={**GOOD, "stream": True}, timeout=10)
        assert streamed.status_code == 200  # the stream had started: the error comes as an event
        assert '"error"' in streamed.text.splitlines()[-2] and "Traceback" not in streamed.text


# ------------------------------------------------------------------------------------------------------------
# One sequence at a time: queue, 429, disconnects, timeouts (on a slowed backend)


class SlowNoEos:
    """Wraps a backend: each decode step takes SLOW_STEP seconds more, EOS is never chosen, steps are counted."""

    name = "slow"

    def __init__(self, inner, eos: int):
        self.inner, self.eos, self.steps = inner, eos, 0

    def _no_eos(self, logits):
        logits = logits.clone()
        logits[self.eos] = -torch.inf
        return logits

    def prefill(self, tokens):
        logits, states = self.inner.prefill(tokens)
        return self._no_eos(logits), states

    def decode(self, token, states):
        time.sleep(SLOW_STEP)
        self.steps += 1
        logits, states = self.inner.decode(token, states)
        return self._no_eos(logits), states


@contextlib.contextmanager
def slowed(served, request_timeout_s: float = 30.0):
    """A server of its own (max_queue 1) over the slowed backend; yields (url, backend)."""
    backend = SlowNoEos(served.engine.backend, served.engine.tokenizer.eos_token_id)
    limits = dataclasses.replace(served.limits, max_queue=1, request_timeout_s=request_timeout_s)
    with running(dataclasses.replace(served, engine=Engine(backend, served.engine.tokenizer), limits=limits)) as base:
        yield base, backend


@pytest.fixture
def slow(served):
    with slowed(served) as server:
        yield server


def wait_for(predicate, timeout: float = 5.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def health(base: str) -> dict:
    return httpx.get(f"{base}/health").json()


def open_stream(base: str, max_tokens: int = 200):
    """A streamed request that has produced its first piece (so it holds the slot); returns (client, response,
    lines): the caller keeps ``lines`` alive (a collected line iterator closes the response)."""
    http = httpx.Client(timeout=10)
    response = http.send(http.build_request("POST", f"{base}/v1/completions", json={
        "model": "demo", "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True}), stream=True)
    assert response.status_code == 200
    lines = response.iter_lines()
    assert next(line for line in lines if line.startswith("data: "))
    return http, response, lines


def raw_post(base: str, body: bytes) -> socket.socket:
    """Send a whole non-streamed request on a bare socket and return it unread (the test closes it)."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    return sock


def test_queue_full_gets_429_with_retry_after(slow):
    base, _ = slow
    http, stream, _lines = open_stream(base)
    queued = raw_post(base, b'{"model": "demo", "prompt": "The", "max_tokens": 2}')
    wait_for(lambda: health(base)["queued"] == 1, what="the second request to queue")
    refused = httpx.post(f"{base}/v1/completions", json={**GOOD, "max_tokens": 2})
    print(refused.status_code, refused.headers, refused.text)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["type"] == "rate_limit_error"
    with pytest.raises(openai.RateLimitError):
        openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0).completions.create(
            model="demo", prompt=PROMPT, max_tokens=2)
    stream.close()
    http.close()
    queued.settimeout(10)
    assert queued.recv(100).startswith(b"HTTP/1.1 200")  # the queued request ran once the slot was freed
    queued.close()


def test_disconnecting_stream_frees_the_slot(slow):
    base, backend = slow
    http, stream, _lines = open_stream(base, max_tokens=250)
    assert health(base)["active"] == 1
    stream.close()
    http.close()
    closed = time.monotonic()
    wait_for(lambda: health(base)["active"] == 0, what="the slot to be freed")
    print(f"slot freed {time.monotonic() - closed:.3f} s after the client left, at step {backend.steps}")
    steps = backend.steps
    time.sleep(10 * SLOW_STEP)
    assert backend.steps == steps < 200  # the generation stopped, long before its 250 tokens
    answer = httpx.post(f"{base}/v1/completions", json={**GOOD, "max_tokens": 3}, timeout=10)
    assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 3
    metrics = httpx.get(f"{base}/metrics").text
    assert 'edge_quamba_errors_total{endpoint="/v1/completions",type="cancelled"} 1.0' in metrics


def test_disconnecting_whole_request_frees_the_slot_and_the_queue(slow):
    base, backend = slow
    running_request = raw_post(base, b'{"model": "demo", "prompt": "The", "max_tokens": 250}')
    wait_for(lambda: health(base)["active"] == 1, what="the request to start")
    queued = raw_post(base, b'{"model": "demo", "prompt": "The", "max_tokens": 250}')
    wait_for(lambda: health(base)["queued"] == 1, what="the second request to queue")
    queued.close()
    wait_for(lambda: health(base)["queued"] == 0, what="the queued request to leave")
    assert health(base)["active"] == 1
    running_request.close()
    wait_for(lambda: health(base)["active"] == 0, what="the slot to be freed")
    steps = backend.steps
    time.sleep(10 * SLOW_STEP)
    assert backend.steps == steps < 200


def test_request_timeout_ends_generation_with_length(served):
    with slowed(served, request_timeout_s=1.0) as (base, _):
        start = time.monotonic()
        answer = httpx.post(f"{base}/v1/completions", json={**GOOD, "max_tokens": 256}, timeout=20).json()
        elapsed = time.monotonic() - start
    print(f"{elapsed:.2f} s, {answer['usage']}")
    assert answer["choices"][0]["finish_reason"] == "length"
    assert 0 < answer["usage"]["completion_tokens"] < 256
    assert 0.9 < elapsed < 4.0


def test_load_benchmark_clients_retry_429s_and_all_get_served(served):
    """benchmarks/serve_load.py's clients against a server with no queue: refusals are retried after Retry-After
    and counted, nothing fails."""
    import asyncio

    from benchmarks.serve_load import percentile, run_clients

    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0 and percentile([3.0, 1.0, 2.0, 4.0], 99) == 4.0
    no_queue = dataclasses.replace(served, name="bench", limits=dataclasses.replace(served.limits, max_queue=0))
    with running(no_queue) as base:
        results, wall = asyncio.run(run_clients(base, clients=3, per_client=1, max_tokens=4, time_limit=60))
    print(results)
    assert [r["ok"] for r in results] == [True] * 3
    assert [r["tokens"] for r in results] == [4] * 3
    assert sum(r["refused"] for r in results) >= 2  # one ran, the other two were refused at least once
    assert all(r["ttft_s"] <= r["latency_s"] for r in results)
