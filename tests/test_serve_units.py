"""The serve package's parts on their own: stop sequences on streamed text, chat templates, request validation and the
one-slot scheduler (no HTTP, no model)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from edge_quamba.errors import ConfigError
from edge_quamba.serve.chat import PLAIN, PLAIN_STOP, load_chat_template
from edge_quamba.serve.errors import APIError
from edge_quamba.serve.scheduler import Failed, Finished, Rejected, Scheduler, Started
from edge_quamba.serve.schemas import ChatRequest, Limits, chat_request, parse
from edge_quamba.serve.stops import StopMatcher

# ------------------------------------------------------------------------------------------------------------
# Stop sequences

TEXT = "def f(x):\n    return x\n\nclass A:\n    pass\n"


def streamed(text: str, stops: tuple[str, ...], cut: list[int]) -> tuple[str, bool, list[str]]:
    """Feed ``text`` in pieces split at ``cut``; returns the released text, whether it stopped, and what each feed
    released."""
    matcher = StopMatcher(stops)
    bounds = [0, *cut, len(text)]
    released = [matcher.feed(text[a:b]) for a, b in zip(bounds, bounds[1:])]
    released.append(matcher.flush())
    assert matcher.text == "".join(released)
    return matcher.text, matcher.stopped, released


@pytest.mark.parametrize("stops, expected", [
    (("\n\n",), "def f(x):\n    return x"),
    (("class", "return"), "def f(x):\n    "),
    (("never",), TEXT),
    (("x):\n    r", "x"), "def f("),  # the earliest occurrence wins, whichever stop it is
    (("",), TEXT),  # an empty stop sequence stops nothing
])
def test_stop_matcher_gives_the_same_text_however_the_stream_is_cut(stops, expected):
    for size in range(1, len(TEXT) + 1):  # every split into pieces of `size` characters
        text, stopped, _ = streamed(TEXT, stops, list(range(size, len(TEXT), size)))
        assert text == expected, (size, text)
        assert stopped == (expected != TEXT)


def test_stop_matcher_holds_back_only_a_possible_stop():
    _, _, released = streamed("abcXYZdef", ("XYZ!",), [3, 4, 5, 6])
    print(released)
    assert released == ["abc", "", "", "", "XYZdef", ""]  # "X", "XY", "XYZ" held until "d" shows no "!" follows


# ------------------------------------------------------------------------------------------------------------
# Chat templates

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
JINJA = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{{ eos_token }}{% endfor %}"
         "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def test_plain_template_when_the_folder_has_none(tmp_path):
    template = load_chat_template(tmp_path)
    assert template.source == PLAIN and template.stop == (PLAIN_STOP,)
    assert template.render(MESSAGES) == "System: Be brief.\n\nUser: Hi\n\nAssistant:"


def test_tokenizer_config_template_is_rendered_like_transformers(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": JINJA, "bos_token": "<s>", "eos_token": {"content": "</s>"}}))
    template = load_chat_template(tmp_path)
    assert template.stop == ()
    assert template.render(MESSAGES) == "<s><|system|>Be brief.</s><|user|>Hi</s><|assistant|>"
    transformers = pytest.importorskip("transformers")
    from helpers import make_tokenizer

    make_tokenizer(120).save(str(tmp_path / "tokenizer.json"))
    reference = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"),
                                                     bos_token="<s>", eos_token="</s>")
    reference.chat_template = JINJA
    assert template.render(MESSAGES) == reference.apply_chat_template(MESSAGES, tokenize=False,
                                                                      add_generation_prompt=True)


def test_template_file_wins_and_a_broken_one_is_one_line(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": JINJA}))
    (tmp_path / "chat_template.jinja").write_text("{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
    assert load_chat_template(tmp_path).render(MESSAGES) == "[Be brief.][Hi]"
    override = tmp_path / "mine.jinja"
    override.write_text("{{ raise_exception('system messages are not supported') }}")
    template = load_chat_template(tmp_path, str(override))
    with pytest.raises(APIError, match="system messages are not supported") as refused:
        template.render(MESSAGES)
    assert refused.value.status == 400
    override.write_text("{% for m in messages %}")
    with pytest.raises(ConfigError, match="not valid Jinja"):
        load_chat_template(tmp_path, str(override))


class _Tokenizer:
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode())


def test_chat_request_adds_the_plain_templates_stop(tmp_path):
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                    {"type": "text", "text": "b"}]}],
            "stop": "###"}
    request = chat_request(parse(ChatRequest, body), _Tokenizer(), load_chat_template(tmp_path), Limits())
    assert bytes(request.prompt_ids).decode() == "User: a\nb\n\nAssistant:"
    assert request.stop == ("###", PLAIN_STOP)
    assert request.max_tokens == Limits().max_tokens  # chat's default: the server's cap
    assert (request.sampling.temperature, request.sampling.top_p, request.sampling.top_k) == (1.0, 1.0, 0)


# ------------------------------------------------------------------------------------------------------------
# The scheduler


def test_scheduler_runs_one_job_at_a_time_in_arrival_order():
    order, overlap, running = [], [], threading.Lock()

    def work(job):
        if not running.acquire(blocking=False):
            overlap.append(job.payload)
        time.sleep(0.01)
        order.append(job.payload)
        running.release()
        return job.payload

    async def main():
        scheduler = Scheduler(work, max_queue=5)
        jobs = [scheduler.submit(i, timeout_s=10) for i in range(6)]  # one will run, five wait
        with pytest.raises(Rejected) as full:
            scheduler.submit(6, timeout_s=10)
        finals = []
        for job in jobs:
            assert isinstance(await job.events.get(), Started)
            finals.append(await job.events.get())
        await scheduler.drain()
        return full.value, finals

    full, finals = asyncio.run(main())
    assert full.status == 429 and full.retry_after >= 1
    assert order == list(range(6)) and overlap == []
    assert [f.outcome for f in finals if isinstance(f, Finished)] == list(range(6))


def test_scheduler_queue_timeout_cancel_and_failure():
    release = threading.Event()

    def work(job):
        if job.payload == "boom":
            raise ValueError("boom")
        while not (release.is_set() or job.cancelled.is_set()):
            time.sleep(0.005)
        return "cancelled" if job.cancelled.is_set() else "done"

    async def main():
        scheduler = Scheduler(work, max_queue=4)
        first = scheduler.submit("block", timeout_s=10)
        late = scheduler.submit("late", timeout_s=0.05)
        left = scheduler.submit("left", timeout_s=10)
        await first.events.get()
        timed_out = await late.events.get()
        left.cancel()
        gone = await left.events.get()
        assert scheduler.waiting == 0
        first.cancel()  # a running job stops at its next check and frees the slot
        stopped = await first.events.get()
        failing = scheduler.submit("boom", timeout_s=10)
        await failing.events.get()
        failed = await failing.events.get()
        await scheduler.drain()
        return timed_out, gone, stopped, failed

    timed_out, gone, stopped, failed = asyncio.run(main())
    assert isinstance(timed_out, Failed) and timed_out.error.status == 503
    assert "--request-timeout" in str(timed_out.error)
    assert isinstance(gone, Failed) and gone.error.code == "cancelled"
    assert isinstance(stopped, Finished) and stopped.outcome == "cancelled"
    assert isinstance(failed, Failed) and isinstance(failed.error, ValueError)
