"""`edge-quamba bench`: time prefill and decode separately for one backend (batch 1), report medians.

TTFT = prefill of ``prompt_len`` tokens + choosing the first token; TPOT = one decode step + choosing the next token,
greedy, on the device where the backend can (``--backend cuda``: the host reads each id one step behind), else on the
host.
Decode tokens/s counts generated tokens only (never the prompt). EOS does not stop the timed loop, so every repeat
decodes exactly ``new_tokens`` tokens. The first run is a warm-up and is dropped. Peak memory is the process's peak
resident set (CPU backends; tensorrt: host memory only, its device buffers are not counted) or the CUDA allocator's
peak (cuda backend). No torch is imported here: ``bench --backend tensorrt`` runs without PyTorch (the torch entries
of the report are None then).
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

from edge_quamba import __version__
from edge_quamba.errors import InputError
from edge_quamba.folders import ModelFolder, load_model_tokenizer, open_model
from edge_quamba.kinds import EXPORT, WEIGHTS
from edge_quamba.resources import default_evaluation_file
from edge_quamba.runtime.backends import Backend, DeviceGreedy, check_backend, make_backend
from edge_quamba.runtime.generate import device_greedy_decoder, device_greedy_tokens
from edge_quamba.runtime.sampling import GREEDY

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".plan")


def model_bytes(folder: ModelFolder, backend: str = "ref") -> int:
    """Bytes of the weight files the backend reads (the decode roofline counts these once per token). An export
    folder holds several copies of the weights: ort reads model.onnx, ref the artifact in quantized/ (an fp32
    export: the fp model in fp/)."""
    if folder.kind == EXPORT.name:
        files = [folder.onnx_file("ort")] if backend == "ort" else [folder.reference.path / WEIGHTS]
    else:
        files = [p for p in folder.path.rglob("*") if p.suffix in WEIGHT_SUFFIXES]
    return sum(p.stat().st_size for p in files if p.is_file())


def bench_prompt(tokenizer, prompt_len: int) -> list[int]:
    """``prompt_len`` real tokens from the shipped evaluation text (repeated if it were shorter)."""
    ids = tokenizer.encode(default_evaluation_file().read_text(encoding="utf-8")[: 40 * prompt_len + 1000])
    while len(ids) < prompt_len:
        ids = ids + ids
    return ids[:prompt_len]


def time_once(backend: Backend, prompt: list[int], new_tokens: int,
              decoder: DeviceGreedy | None = None) -> tuple[float, float]:
    """One timed greedy generation: (ttft seconds, mean seconds per decoded token), until each token is on the host.

    decoder None: the host loop (the logits' argmax on the backend's device or in numpy, then one ``decode`` with that
    token); a backend's on-device greedy decoder (``generate.device_greedy_decoder``): the device chooses and feeds
    each token, the host reads it back one step behind (``generate.device_greedy_tokens``)."""
    start = time.perf_counter()
    if decoder is not None:
        tokens = device_greedy_tokens(decoder, prompt, new_tokens)
        next(tokens)
        first = time.perf_counter()
        for _ in tokens:
            pass
        end = time.perf_counter()
        return first - start, (end - first) / max(new_tokens - 1, 1)
    logits, states = backend.prefill(prompt)
    token = int(logits.argmax())  # torch tensor (on its device) or numpy array: both have argmax
    first = time.perf_counter()
    for _ in range(new_tokens - 1):
        logits, states = backend.decode(token, states)
        token = int(logits.argmax())
    end = time.perf_counter()
    return first - start, (end - first) / max(new_tokens - 1, 1)


def median_timings(backend: Backend, prompt: list[int], new_tokens: int, repeats: int,
                   decoder: DeviceGreedy | None = None) -> tuple[float, float]:
    """Medians of (ttft, tpot) seconds over ``repeats`` runs of :func:`time_once` after one dropped warm-up run
    (allocation, graph optimization, caches); a backend that captures prefill graphs per prompt length
    (``prepare_prefill``: ``--backend cuda``) captures this prompt's first, so no timed run includes a capture."""
    prepare = getattr(backend, "prepare_prefill", None)
    if prepare is not None:
        prepare(len(prompt))
    time_once(backend, prompt, new_tokens, decoder)
    runs = [time_once(backend, prompt, new_tokens, decoder) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def peak_memory_bytes(backend_name: str) -> int:
    if backend_name == "cuda":
        import torch

        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def benchmark(*, model: str | None, backend: str = "ref", prompt_len: int = 128, new_tokens: int = 64,
              repeats: int = 3, tokenizer: str | None = None, threads: int | None = None,
              max_prompt_tokens: int = 4096, device_greedy: bool | None = None) -> dict:
    """Median TTFT/TPOT over ``repeats`` timed runs after one warm-up; a JSON-ready report.

    device_greedy: where the greedy tokens are chosen (``generate.device_greedy_decoder``: None follows
    ``generate.DEVICE_GREEDY_BY_DEFAULT``, as ``run`` does); the report's ``token_choice`` says which ran.

    max_prompt_tokens: the same cap as ``run``'s --max-prompt-tokens (a huge --prompt-len is refused at once instead
    of tokenizing megabytes and allocating activations for it)."""
    if new_tokens < 2:
        raise InputError("--new-tokens must be >= 2 (TPOT needs at least one decode step)")
    if not 1 <= prompt_len <= max_prompt_tokens:
        raise InputError(f"--prompt-len {prompt_len} must be between 1 and {max_prompt_tokens} "
                         f"(--max-prompt-tokens)")
    folder = open_model(model, check=lambda opened: check_backend(backend, opened))
    path, kind = folder.path, folder.kind
    tok = load_model_tokenizer(folder, tokenizer)
    runner = make_backend(backend, folder, threads=threads)
    prompt = bench_prompt(tok, prompt_len)
    # usable vocabulary None: the argmax over every logit, as the host loop takes it
    decoder = device_greedy_decoder(runner, GREEDY, None, device_greedy)
    ttft, tpot = median_timings(runner, prompt, new_tokens, repeats, decoder)
    size = model_bytes(folder, backend)
    torch = sys.modules.get("torch")  # loaded by the torch backends only
    return {
        "model": str(path), "kind": kind, "backend": backend, "batch": 1, "prompt_len": prompt_len,
        "new_tokens": new_tokens, "repeats": repeats, "token_choice": "host" if decoder is None else "device",
        "ttft_ms": ttft * 1e3, "prefill_tokens_per_s": prompt_len / ttft,
        "tpot_ms": tpot * 1e3, "decode_tokens_per_s": 1.0 / tpot,
        "model_bytes": size, "decode_weight_gb_per_s": size / tpot / 1e9,
        "peak_memory_bytes": peak_memory_bytes(backend),
        "machine": {"processor": cpu_name(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads() if torch else None,
                    "ort_threads": threads, "python": platform.python_version(),
                    "torch": torch.__version__ if torch else None,
                    "onnxruntime": package_version("onnxruntime"), "edge_quamba": __version__},
    }


def package_version(package: str) -> str | None:
    """The installed version of ``package``, None when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo on Linux), for benchmark records."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
