"""A LAMBADA-style last-word task built from an evaluation text, written as an lm-eval local task.

LAMBADA (Paperno et al., 2016) asks a model for the last word of a passage's final sentence, chosen so that the
context makes the word predictable. We make the same kind of task from any held-out text, deterministically:

    passage   every sentence end in the text whose last word (the *target*) is alphabetic, at least
              ``min_word_len`` letters, preceded by a space, and followed by . ! or ? (then optional closing quotes
              or brackets, then whitespace or the end of the text)
    context   the text before the target's space, at most ``max_context_chars`` characters back (cut to a whole
              word), kept only if it holds at least ``min_context_words`` words AND the target occurs in it as a whole
              word (case-sensitive): the proxy for "the context determines it" that needs no human filtering
    target    " " + word (the space belongs to the continuation, as in lm-eval's lambada)
    cap       when more than ``max_examples`` passages qualify, every k-th one is kept (evenly over the text)

Scored by lm-eval's ``loglikelihood`` requests: ``acc`` is the fraction of passages whose target tokens are all the
model's greedy choices, ``perplexity`` is exp of the mean negative log-likelihood of the targets.

    examples = build_examples(read_text("calib_data/evaluation.txt"))
    task = write_task(Path("tasks"), examples, source=Path("calib_data/evaluation.txt"))
    lm_eval.simple_evaluate(model=..., tasks=[task.name], task_manager=TaskManager(include_path=str(task.folder)))
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from edge_quamba.errors import InputError
from edge_quamba.integrity import file_sha256

TASK_NAME = "edge_quamba_last_word"
_SENTENCE_END = re.compile(r"(?<= )([A-Za-z]+)(?=[.!?][\"'”’)\]]*(?:\s|$))")


@dataclass(frozen=True)
class LastWordTask:
    """A written task: lm-eval's task ``name``, the folder to pass as ``include_path``, its JSONL and a manifest."""

    name: str
    folder: Path
    data: Path
    manifest: dict


def build_examples(text: str, max_examples: int = 500, min_context_words: int = 20, max_context_chars: int = 1000,
                   min_word_len: int = 3) -> list[dict]:
    """The passages of ``text`` (module docstring) in text order: dicts {"context", "target", "offset"} where
    offset is the target word's character index in ``text``. The same text and arguments give the same list."""
    found = []
    for match in _SENTENCE_END.finditer(text):
        word, start = match.group(1), match.start(1)
        if len(word) < min_word_len:
            continue
        context = text[max(0, start - 1 - max_context_chars):start - 1]  # up to the target's space, excluded
        if start - 1 > max_context_chars:  # cut a partial first word
            context = context.split(None, 1)[1] if len(context.split(None, 1)) == 2 else ""
        if len(context.split()) < min_context_words or not re.search(rf"\b{re.escape(word)}\b", context):
            continue
        found.append({"context": context, "target": " " + word, "offset": start})
    if len(found) > max_examples:
        step = len(found) / max_examples
        found = [found[int(i * step)] for i in range(max_examples)]
    return found


def write_task(folder: Path, examples: list[dict], source: Path, name: str = TASK_NAME) -> LastWordTask:
    """Write ``<name>.jsonl`` (one example per line) and ``<name>.yaml`` (the lm-eval task: loglikelihood of
    the target after the context; metrics acc and perplexity) into ``folder``; returns where they are."""
    if not examples:
        raise InputError(f"{source}: no last-word passages found (the text has no qualifying sentence ends)")
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in examples),
                    encoding="utf-8")
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {json.dumps(str(data.resolve()))}\n"
        "test_split: test\n"
        "output_type: loglikelihood\n"
        'doc_to_text: "{{context}}"\n'
        'doc_to_target: "{{target}}"\n'
        "metric_list:\n"
        "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: perplexity\n    aggregation: perplexity\n    higher_is_better: false\n",
        encoding="utf-8")
    manifest = {"task": name, "source": source.name, "source_sha256": file_sha256(source), "examples": len(examples),
                "jsonl_sha256": file_sha256(data)}
    return LastWordTask(name=name, folder=folder, data=data, manifest=manifest)
