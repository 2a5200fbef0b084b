"""The ``edge-quamba`` command line (contract: shared/design/CLI.md).

Each command is short: it imports lazily (so ``--help`` is instant), calls one library function by keyword, prints
every path it writes, and turns user errors into one line on stderr with a non-zero exit (see ``main``). The flags
shared by several commands are declared in :mod:`edge_quamba.cli_options`.
"""

from __future__ import annotations

import json
import sys

import click

from edge_quamba import __version__
from edge_quamba.cli_options import (backend_option, calibration_options, model_option, quant_config, threads_option,
                                     tokenizer_option)
from edge_quamba.onnx import MAX_VALIDATE_DECODE_STEPS, MAX_VALIDATE_PROMPT_LEN, TARGETS
from edge_quamba.recipe_options import given_options, refuse_inapplicable
from edge_quamba.runtime import SEED_MAX


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge-quamba")
def cli() -> None:
    """Quantize Mamba language models with Quamba (W8A8), export them to ONNX with int8 custom ops, and run them
    with a PyTorch reference, ONNX Runtime, CUDA kernels or TensorRT on Jetson."""


@cli.command()
@model_option
@click.option("--prompt", required=True, help="Text to continue.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0), default=0.8, show_default=True, help="0 is greedy.")
@click.option("--top-k", type=click.IntRange(min=0), default=50, show_default=True, help="0 disables.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=0.95, show_default=True)
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=None,
              help="Seed for sampling (reproducible output), 0 to 2**64-1.")
@backend_option
@tokenizer_option
@click.option("--max-prompt-tokens", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Refuse longer prompts.")
@threads_option
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (prompt_tokens, tokens, text, ttft_ms, tpot_ms, backend, stop_reason, "
              "token_choice) instead of streaming.")
@click.pass_context
def run(ctx, model, prompt, max_new_tokens, temperature, top_k, top_p, seed, backend, tokenizer, max_prompt_tokens,
        threads, as_json):
    """Generate a continuation of --prompt, streaming text to stdout (EOS or --max-new-tokens ends it)."""
    from edge_quamba.errors import InputError
    from edge_quamba.runtime.run import run_prompt
    from edge_quamba.runtime.sampling import SamplingConfig

    given = given_options(ctx)
    for name in ("top_k", "top_p", "seed"):
        if temperature == 0 and name in given:
            raise InputError(f"{given[name]} does not apply: --temperature 0 decodes greedily (nothing is sampled)")
    check_utf8(prompt, "--prompt")

    def emit(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    result = run_prompt(
        model=model, prompt=prompt, max_new_tokens=max_new_tokens,
        sampling=SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed),
        backend=backend, tokenizer=tokenizer, max_prompt_tokens=max_prompt_tokens,
        emit=None if as_json else emit, threads=threads,
    )
    if as_json:
        click.echo(json.dumps({
            "prompt_tokens": result.prompt_tokens, "tokens": result.tokens, "text": result.text,
            "ttft_ms": result.ttft_ms, "tpot_ms": result.tpot_ms, "backend": backend,
            "stop_reason": result.stop_reason, "token_choice": result.token_choice,
        }))
    else:
        click.echo()
        tpot = f"{result.tpot_ms:.1f} ms" if result.tpot_ms is not None else "n/a"
        click.echo(f"[{len(result.tokens)} tokens, {backend}: TTFT {result.ttft_ms:.1f} ms, TPOT {tpot}]", err=True)


@cli.command(name="eval")
@model_option
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False), help="UTF-8 text file.")
@click.option("--seq-len", type=click.IntRange(min=2), default=512, show_default=True,
              help="Window length; windows do not overlap (stride = seq-len) and each scores its seq-len - 1 "
              "next-token predictions.")
@click.option("--max-tokens", type=click.IntRange(min=2), default=None, help="Score only the first N tokens.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@backend_option
@tokenizer_option
@threads_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def eval_(model, data, seq_len, max_tokens, batch_size, backend, tokenizer, threads, as_json):
    """Held-out perplexity of any model kind on a text file (backends ref and ort)."""
    from edge_quamba.eval.perplexity import evaluate_perplexity

    report = evaluate_perplexity(
        model=model, data=data, seq_len=seq_len, max_tokens=max_tokens, batch_size=batch_size,
        backend=backend, tokenizer=tokenizer, threads=threads,
    )
    if as_json:
        click.echo(json.dumps(report))
    else:
        click.echo(
            f"perplexity {report['perplexity']:.3f} (nll {report['nll_per_token']:.4f} nats/token) over "
            f"{report['scored_tokens']} tokens, {report['windows']} windows of {seq_len}, backend {backend}"
        )


@cli.command()
@model_option
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Artifact folder to write (replaced atomically).")
@calibration_options
def quantize(model, out, calib_data, method, bits, group_size, no_gptq, gptq_order, head_groups, dim_groups,
             no_sort_cluster, no_group_bc, kv_cache, float_attn_mlp, calib_samples, calib_seq_len, calib_seed,
             weight_scales, percentile,
             no_percentile, percentile_on, no_hadamard, out_proj_scale, batch_size, tokenizer):
    """Calibrate an fp checkpoint and write a quantized artifact: Quamba W8A8 by default (int8 weights, static
    per-tensor scales, Hadamard-rotated out_proj, percentile clipping of the scan input and of the rotated
    out_proj input), or --bits w4a8 / w4a16 (group-wise int4 linear weights rounded with GPTQ)."""
    from edge_quamba.kinds import ARTIFACT_FILES
    from edge_quamba.quant.pipeline import quantize_checkpoint

    if bits == "fp32":
        raise click.UsageError("--bits fp32 is not a quantization: `edge-quamba export --bits fp32` writes the fp "
                               "checkpoint's float32 ONNX graph")
    check = refuse_inapplicable(click.get_current_context(), export=False)
    qconfig = quant_config(calib_samples, calib_seq_len, percentile, no_percentile, percentile_on, no_hadamard,
                           calib_seed, weight_scales, out_proj_scale, method, bits, group_size, no_gptq, head_groups,
                           dim_groups, no_sort_cluster, no_group_bc, gptq_order, kv_cache, float_attn_mlp)
    path = quantize_checkpoint(model=model, out=out, calib_data=calib_data, qconfig=qconfig, tokenizer=tokenizer,
                               batch_size=batch_size, check=check)
    for name in ARTIFACT_FILES:
        click.echo(f"wrote {path}/{name}")


@cli.command(name="export")
@model_option
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Export folder to write. It replaces an existing one only after validation passed.")
@click.option("--target", type=click.Choice(TARGETS), default="all", show_default=True,
              help="ort: model.onnx (custom ops as ONNX functions, runs on stock ONNX Runtime); tensorrt: "
              "model.trt.onnx (custom ops as TensorRT plugin nodes; not tested with TensorRT here); all: both "
              "(W4A16 Mamba2 and hybrid models, --out-proj-scale dynamic and --bits fp32: ort only).")
@calibration_options
@click.option("--validate-prompt-len", type=click.IntRange(1, MAX_VALIDATE_PROMPT_LEN), default=128, show_default=True,
              help=f"Validation prompt: this many tokens of the calibration text (at most {MAX_VALIDATE_PROMPT_LEN}).")
@click.option("--validate-decode-steps", type=click.IntRange(0, MAX_VALIDATE_DECODE_STEPS), default=8,
              show_default=True, help="Greedy decode steps validated after the prompt, states threaded through the "
              f"graph (at most {MAX_VALIDATE_DECODE_STEPS}).")
@click.option("--float-parts", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
              help="The TensorRT graph's residual stream between blocks (W8A8 Mamba1 and Mamba2): float16 halves "
                   "its memory traffic on a Jetson (norms and sums still computed in float32), at the cost measured by "
                   "benchmarks/float_parts.py; validated against the reference with the same setting.")
@threads_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (files, validation) at the end.")
def export_(model, out, target, calib_data, method, bits, group_size, no_gptq, gptq_order, head_groups, dim_groups,
            no_sort_cluster, no_group_bc, kv_cache, float_attn_mlp, calib_samples, calib_seq_len, calib_seed,
            weight_scales, percentile,
            no_percentile, percentile_on, no_hadamard, out_proj_scale, batch_size, tokenizer, validate_prompt_len,
            validate_decode_steps, float_parts, threads, as_json):
    """Quantize (when --model is an fp checkpoint), export to ONNX with int8 custom ops, and validate on ONNX
    Runtime against the quantized reference.

    Prints one line per graph output (max abs diff, tolerance, pass/fail) and exits non-zero when any fails; the
    folder is then not written. --model may also be a quantized artifact or an export folder (re-exported); the
    recipe options apply only when it is an fp checkpoint (given otherwise, they are refused, as is every option
    given that does not apply: edge_quamba/recipe_options.py). --bits fp32 exports an fp checkpoint unquantized
    (its float32 graph, validated against the float32 fp model; --target ort only)."""
    from edge_quamba.onnx.export import export_fp32_model, export_model

    echo = lambda line: click.echo(line, err=as_json)  # noqa: E731
    check = refuse_inapplicable(click.get_current_context(), export=True)
    if bits == "fp32":  # refuse_inapplicable refused every recipe option and --float-parts
        result = export_fp32_model(model=model, out=out, target=target, calib_data=calib_data, tokenizer=tokenizer,
                                   prompt_len=validate_prompt_len, decode_steps=validate_decode_steps,
                                   threads=threads, echo=echo, check=check)
    else:
        result = export_model(
            model=model, out=out, target=target, calib_data=calib_data,
            qconfig=quant_config(calib_samples, calib_seq_len, percentile, no_percentile, percentile_on,
                                 no_hadamard, calib_seed, weight_scales, out_proj_scale, method, bits, group_size,
                                 no_gptq, head_groups, dim_groups, no_sort_cluster, no_group_bc, gptq_order, kv_cache,
                                 float_attn_mlp),
            tokenizer=tokenizer, batch_size=batch_size, prompt_len=validate_prompt_len,
            decode_steps=validate_decode_steps, threads=threads, echo=echo, float_parts=float_parts, check=check,
        )
    if as_json:
        click.echo(json.dumps({"out": str(result.out), "files": [str(f) for f in result.files],
                               "validation": {flavour: report.to_dict()
                                              for flavour, report in result.validation.items()}}))
        return
    click.echo("validation passed")
    for file in result.files:
        click.echo(f"wrote {file}")


@cli.command()
@model_option
@backend_option
@click.option("--prompt-len", type=click.IntRange(min=1), default=128, show_default=True,
              help="Prompt tokens (taken from the shipped evaluation text).")
@click.option("--new-tokens", type=click.IntRange(min=2), default=64, show_default=True,
              help="Tokens decoded per timed run (EOS does not stop the loop).")
@click.option("--repeats", type=click.IntRange(min=1), default=3, show_default=True,
              help="Timed runs after one warm-up; medians are reported.")
@click.option("--max-prompt-tokens", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Refuse a longer --prompt-len (as `run` refuses longer prompts).")
@tokenizer_option
@threads_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench(model, backend, prompt_len, new_tokens, repeats, max_prompt_tokens, tokenizer, threads, as_json):
    """Measure TTFT, prefill and decode tokens/s (batch 1) and peak memory of one backend."""
    from edge_quamba.runtime.bench import benchmark

    report = benchmark(model=model, backend=backend, prompt_len=prompt_len, new_tokens=new_tokens,
                       repeats=repeats, tokenizer=tokenizer, threads=threads, max_prompt_tokens=max_prompt_tokens)
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"backend {backend}, batch 1, prompt {prompt_len} tokens, {new_tokens} new tokens, "
               f"median of {repeats} ({report['machine']['processor']})")
    click.echo(f"  TTFT    {report['ttft_ms']:9.2f} ms   prefill {report['prefill_tokens_per_s']:9.1f} tokens/s")
    click.echo(f"  TPOT    {report['tpot_ms']:9.2f} ms   decode  {report['decode_tokens_per_s']:9.1f} tokens/s "
               f"({report['decode_weight_gb_per_s']:.3f} GB/s of {report['model_bytes'] / 1e6:.1f} MB weights)")
    click.echo(f"  peak memory {report['peak_memory_bytes'] / 2**20:.0f} MiB")

@cli.command(name="build-engine")
@click.option("--model", "model", default=None, metavar="EXPORT_DIR",
              help="Export folder holding model.trt.onnx (edge-quamba export --target tensorrt or all).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Engine folder to write.")
@click.option("--plugins", type=click.Path(dir_okay=False), default=None, metavar="LIB",
              help="libedge_quamba_trt_plugins.so (plugins/tensorrt/README.md).")
@click.option("--max-prompt-len", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Longest prompt of the prefill optimization profile.")
def build_engine(model, out, plugins, max_prompt_len):
    """Build a TensorRT engine folder (decode and prefill profiles, strongly typed) from an export folder, with
    TensorRT >= 10.1 (JetPack 6.1+). The export folder (every file's sha256, model.trt.onnx included) and --out are
    checked before TensorRT is imported. Never run with TensorRT so far: it is absent where this package is tested
    (tested with a fake of its Python API)."""
    from edge_quamba.kinds import ENGINE_CONFIG, ENGINE_FILE, TOKENIZER
    from edge_quamba.runtime.tensorrt_engine import build_engine as build

    path = build(model=model, out=out, plugins=plugins, max_prompt_len=max_prompt_len)
    for name in (ENGINE_FILE, ENGINE_CONFIG, TOKENIZER):
        click.echo(f"wrote {path}/{name}")


@cli.command()
@model_option
@backend_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. The default is loopback only: the server has no authentication.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 picks a free port.")
@tokenizer_option
@threads_option
@click.option("--served-model-name", default=None, metavar="NAME",
              help="The model id clients send and GET /v1/models lists. Default: --model as given (demo without).")
@click.option("--chat-template", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Jinja chat template file. Default: the model folder's chat_template.jinja or "
              "tokenizer_config.json, else the plain 'User: ... Assistant:' template (README, Serving).")
@click.option("--max-prompt-tokens", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Refuse longer prompts (400).")
@click.option("--max-tokens", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Most tokens one request may generate (400 above; the chat default).")
@click.option("--max-body-bytes", type=click.IntRange(min=1), default=1 << 20, show_default=True,
              help="Refuse larger request bodies (413).")
@click.option("--max-queue", type=click.IntRange(min=0), default=16, show_default=True,
              help="Requests that may wait while one generates; one more gets 429 with Retry-After.")
@click.option("--request-timeout", type=click.FloatRange(min=0, min_open=True), default=300.0, show_default=True,
              help="Seconds from arrival: a request still queued then gets 503; a generation still running stops "
              "(finish_reason \"length\").")
@click.option("--shutdown-timeout", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="On SIGTERM, seconds the running generation may take to finish before it is cancelled.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True)
@click.option("--no-access-log", is_flag=True, help="Do not log one line per request.")
def serve(model, backend, host, port, tokenizer, threads, served_model_name, chat_template, max_prompt_tokens,
          max_tokens, max_body_bytes, max_queue, request_timeout, shutdown_timeout, log_level, no_access_log):
    """OpenAI-compatible HTTP server: POST /v1/completions and /v1/chat/completions (streamed as server-sent events
    with "stream": true), GET /v1/models, /health, and /metrics (Prometheus).

    One sequence generates at a time (no batching); up to --max-queue requests wait in arrival order. A client that
    disconnects cancels its request. SIGTERM or Ctrl-C: stop accepting, refuse the queue (503), let the running
    generation finish within --shutdown-timeout (then cancel it), exit 0. Needs the `serve` extra:
    pip install "edge-quamba[serve]"."""
    try:
        from edge_quamba.serve.server import serve as run_server
    except ModuleNotFoundError as exc:
        raise click.ClickException(f"`serve` needs {exc.name}, which is not installed: pip install "
                                   f"\"edge-quamba[serve]\"") from None
    from edge_quamba.serve.schemas import Limits

    run_server(model=model, backend=backend, host=host, port=port, tokenizer=tokenizer, threads=threads,
               served_model_name=served_model_name, chat_template=chat_template,
               limits=Limits(max_prompt_tokens=max_prompt_tokens, max_tokens=max_tokens,
                             max_body_bytes=max_body_bytes, max_queue=max_queue, request_timeout_s=request_timeout,
                             shutdown_timeout_s=shutdown_timeout),
               access_log=not no_access_log, log_level=log_level,
               announce=lambda line: click.echo(line, err=True))


def check_utf8(text: str, option: str) -> None:
    """Command-line text that is not valid UTF-8 reaches Python as lone surrogates (PEP 383); refuse it in one
    line instead of failing deep inside the tokenizer or the JSON writer."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        byte = ord(text[exc.start]) - 0xDC00 if 0xDC80 <= ord(text[exc.start]) <= 0xDCFF else None
        what = f"byte 0x{byte:02x}" if byte is not None else f"character U+{ord(text[exc.start]):04X}"
        from edge_quamba.errors import InputError

        raise InputError(f"{option} is not valid UTF-8 text ({what} at position {exc.start})") from None


def _fail(message: str, code: int, as_json: bool) -> None:
    """The one error line on stderr (and with --json, one JSON object {"error": ...} on stdout), then exit."""
    if as_json:
        sys.stdout.write(json.dumps({"error": message}) + "\n")
        sys.stdout.flush()
    click.echo(f"edge-quamba: error: {message}", err=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the group; print user errors as ONE line on stderr and exit non-zero (with --json, also
    one JSON object {"error": "..."} on stdout). Started with stdout closed, it refuses at once (edge_quamba/
    streams.py); a reader of stdout that goes away (EPIPE) ends it quietly with exit 1."""
    import errno

    from edge_quamba.atomic import WRITE_ERRNOS
    from edge_quamba.errors import EdgeQuambaError, Terminated
    from edge_quamba.streams import CLOSED_STDOUT, drop_stdout, stdout_closed

    if stdout_closed():
        _fail(CLOSED_STDOUT, 1, False)
    args = sys.argv[1:] if argv is None else list(argv)
    as_json = "--json" in args[: args.index("--")] if "--" in args else "--json" in args
    try:
        code = cli.main(args=args, prog_name="edge-quamba", standalone_mode=False)
        sys.stdout.flush()  # an EPIPE on what is still buffered is caught here, not at the interpreter's exit
    except click.UsageError as exc:  # unknown option, missing or invalid value
        hint = f" (see: {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
        _fail(f"{exc.format_message()}{hint}", 2, as_json)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code, as_json)
    except EdgeQuambaError as exc:
        _fail(str(exc), 1, as_json)
    except click.Abort:
        _fail("interrupted", 130, as_json)
    except Terminated as exc:
        _fail(f"terminated by signal {exc.signum}; unfinished output removed", 128 + exc.signum, as_json)
    except BrokenPipeError:  # stdout closed early (e.g. piped into head): stop quietly, no traceback
        drop_stdout()
        sys.exit(1)
    except OSError as exc:  # disk full, read-only file system, ... outside an output folder (e.g. stdout > file)
        if exc.errno not in WRITE_ERRNOS | {errno.EIO}:
            raise
        _fail(f"{exc.filename or 'I/O error'}: {exc.strerror}", 1, as_json)
    sys.exit(code if isinstance(code, int) else 0)
