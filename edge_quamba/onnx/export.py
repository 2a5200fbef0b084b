"""`edge-quamba export` as a library call: fp checkpoint or quantized artifact -> validated export folder.

    1. the quantized artifact: quantize the fp checkpoint (``quantize_checkpoint``), or copy the given artifact, into
       ``quantized/`` of the new folder
    2. lower it (:func:`edge_quamba.onnx.lower.lower_model`) and derive the TensorRT flavour
    3. check both flavours: onnx.checker (full_check) and :func:`edge_quamba.onnx.structure_check.check_graph`; a
       TensorRT graph to be written must also pass :func:`edge_quamba.onnx.tensorrt_check.require_tensorrt_conformance`
       (ConformanceError: nothing is written)
    4. write the ONNX file(s) of ``target``, the tokenizer and export_config.json
    5. validate on ONNX Runtime against the reference in ``quantized/`` (:func:`validate_on_ort`): one line per output

``out`` is checked before any work (it must be new, empty or an edge-quamba output, and apart from ``--model``), and
a quantized artifact or export folder given as ``--model`` has its files' sha256 verified before it is re-exported.
Everything is written into a temporary sibling of ``out`` that replaces ``out`` only after validation passed
(:func:`edge_quamba.atomic.atomic_output_dir`). When validation fails, nothing is moved into place: an existing
``out`` is left as it was, no folder that looks valid appears, and a ValidationError says which output failed (the
per-output lines have already been printed). So every export folder on disk passed its validation.

:func:`export_fp32_model` (``export --bits fp32``) exports an fp checkpoint without quantizing it: the float32 graph
(:mod:`edge_quamba.onnx.lower_w4a16`, which says why float32 is the CPU baseline), validated on ONNX Runtime against
the float32 fp reference, with that reference in ``fp/`` instead of ``quantized/`` (:mod:`edge_quamba.onnx.folder`).
It is the baseline the quantized graphs' CPU speed is compared with (benchmarks/bitwidths.py, benchmarks/quamba2.py).
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import onnx

from edge_quamba import __version__
from edge_quamba.atomic import atomic_output_dir, check_output_dir
from edge_quamba.errors import InputError, ValidationError
from edge_quamba.folders import Check, ModelFolder, load_model_tokenizer, load_reference_model, open_folder, open_model
from edge_quamba.integrity import file_sha256
from edge_quamba.kinds import (ARTIFACT_FILES, EXPORT_FORMAT_VERSION, EXPORT, FP, FP32_GRAPH, FP_CONFIG, FP_DIR,
                               FP_REFERENCE_FILES, ORT_MODEL, QUANTIZED, QUANTIZED_DIR, QUANTIZED_GRAPH, TARGET_FILES,
                               TOKENIZER, TRT_MODEL, WEIGHTS)
from edge_quamba.models.config import Mamba2Config
from edge_quamba.models.tokenizer import load_tokenizer
from edge_quamba.models.hybrid_config import HybridConfig
from edge_quamba.onnx import INPUT_IDS, LAST_LOGITS, LOGITS, TARGETS, graph_state_names
from edge_quamba.onnx.folder import write_export_config
from edge_quamba.onnx.lower import (FLAVOURS, NO_FP32_TENSORRT, NO_MAMBA2_W4A16_TENSORRT, TENSORRT_DYNAMIC_REFUSAL,
                                    lower_model)
from edge_quamba.onnx.lower_hybrid import lower_hybrid_model, refuse_hybrid_export
from edge_quamba.onnx.structure_check import check_graph
from edge_quamba.onnx.tensorrt import to_tensorrt_flavour
from edge_quamba.onnx.tensorrt_check import require_tensorrt_conformance
from edge_quamba.onnx.validate import FP32_RTOL, ValidationReport, validate_float_graph_on_ort, validate_on_ort
from edge_quamba.onnx.validate_hybrid import validate_hybrid_float_on_ort, validate_hybrid_on_ort
from edge_quamba.ops.specs import DOMAIN, SPECS
from edge_quamba.quant.config import QuantConfig
from edge_quamba.quant.qmodel import FLOAT_PARTS, use_float_parts
from edge_quamba.resources import default_calibration_file

@dataclass
class ExportResult:
    out: Path
    files: list[Path]
    validation: dict[str, ValidationReport]  # by flavour: every target written was validated


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _make_artifact(source: ModelFolder, dest: Path, *, model: str | None, calib_data, qconfig: QuantConfig,
                   tokenizer: str | None, batch_size: int, progress: bool) -> None:
    """The quantized artifact in ``dest``: quantized now (fp checkpoint) or copied (artifact / export folder, both
    verified when opened)."""
    if source.kind == FP:
        from edge_quamba.quant.pipeline import quantize_folder

        quantize_folder(source, out=dest, calib_data=calib_data, qconfig=qconfig, tokenizer=tokenizer,
                        batch_size=batch_size, progress=progress, model_name=model)
        return
    artifact = source if source.kind == QUANTIZED.name else source.reference
    dest.mkdir()
    for name in ARTIFACT_FILES:
        shutil.copyfile(artifact.path / name, dest / name)


def read_calib_text(calib_data: str | Path | None, chars: int) -> str:
    """The first ``chars`` characters of ``--calib-data`` (the shipped split when None); a file that is not UTF-8
    text (a binary, a model file passed by mistake) is a one-line InputError naming --calib-data."""
    from edge_quamba.paths import require_regular_file

    file = Path(calib_data) if calib_data is not None else default_calibration_file()
    require_regular_file(file, f"--calib-data {file}")  # a FIFO would block, a device read forever
    try:
        with open(file, encoding="utf-8", errors="strict") as handle:
            text = handle.read(chars)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--calib-data {file}: not readable UTF-8 text ({exc})") from None
    if "\x00" in text:
        raise InputError(f"--calib-data {file}: not text (it holds NUL bytes)")
    return text


def check_validation_lengths(prompt_len: int, decode_steps: int) -> None:
    """The validation's prompt length and decode steps within their bounds (before any work)."""
    from edge_quamba.onnx import MAX_VALIDATE_DECODE_STEPS, MAX_VALIDATE_PROMPT_LEN

    if not 1 <= prompt_len <= MAX_VALIDATE_PROMPT_LEN:
        raise InputError(f"--validate-prompt-len {prompt_len} must be between 1 and {MAX_VALIDATE_PROMPT_LEN}")
    if not 0 <= decode_steps <= MAX_VALIDATE_DECODE_STEPS:
        raise InputError(f"--validate-decode-steps {decode_steps} must be between 0 and {MAX_VALIDATE_DECODE_STEPS}")


def validation_prompt(tokenizer_dir: Path, calib_data: str | Path | None, prompt_len: int) -> list[int]:
    """The first ``prompt_len`` tokens of the calibration text (the default split when none is given)."""
    text = read_calib_text(calib_data, 40 * prompt_len + 1000)
    ids = load_tokenizer(tokenizer_dir).encode(text)[:prompt_len]
    if not ids:
        raise InputError(f"--calib-data {calib_data}: no text to validate the export on")
    return ids


def export_model(
    *,
    model: str | None,
    out: str | Path,
    target: str = "all",
    calib_data: str | Path | None = None,
    qconfig: QuantConfig = QuantConfig(),
    tokenizer: str | None = None,
    batch_size: int = 8,
    prompt_len: int = 128,
    decode_steps: int = 8,
    threads: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = _stderr,
    float_parts: str = "float32",
    check: Check | None = None,
) -> ExportResult:
    """Export ``model`` into the folder ``out`` (see the module docstring); ``echo`` receives the validation lines.

    model: an fp checkpoint (quantized first with ``qconfig`` and ``calib_data``), a quantized artifact, or an
    export folder (its ``quantized/`` is exported again). float_parts: the TensorRT graph's residual stream dtype
    ("float16": :func:`edge_quamba.quant.qmodel.use_float_parts`; validated against the reference with the same
    setting; the ORT graph is float32 either way). check: refusals run on the opened folder before its files are
    verified (the CLI's options that do not apply). Returns the folder, the files written and the report.
    """
    if target not in TARGETS:
        raise InputError(f"--target {target!r} is not one of {', '.join(TARGETS)}")
    check_validation_lengths(prompt_len, decode_steps)
    source = open_model(model, check=check)  # an artifact's or export's files verified, before anything is written
    path, kind = source.path, source.kind
    if source.fp32_export:
        raise InputError(f"--model {path} is an fp32 export (--bits fp32), it holds no quantized model: export its fp "
                         f"checkpoint {path / FP_DIR} instead, or re-export it with --bits fp32")
    inputs = [("--model", path)]
    check_output_dir(out, inputs)
    artifact = None if kind == FP else source if kind == QUANTIZED.name else source.reference
    bits = (qconfig if artifact is None else artifact.quant).bits
    mamba2 = isinstance(source.config, Mamba2Config)
    ort_only = mamba2 and bits == "w4a16"  # no TensorRT graph (NO_MAMBA2_W4A16_TENSORRT says why)
    if ort_only and target == "tensorrt":
        raise InputError(NO_MAMBA2_W4A16_TENSORRT)
    hybrid = isinstance(source.config, HybridConfig)
    if hybrid:
        refuse_hybrid_export(target)
    if calib_data is not None:
        read_calib_text(calib_data, 1 << 16)  # a binary --calib-data fails now, not after the quantization
    targets = ["ort", "tensorrt"] if target == "all" else [target]
    out_proj_scale = (qconfig if artifact is None else artifact.quant).out_proj_scale
    if out_proj_scale == "dynamic" and "tensorrt" in targets:  # refused before any work (no TensorRT graph exists)
        raise InputError(TENSORRT_DYNAMIC_REFUSAL.replace("--target tensorrt", f"--target {target}", 1))
    if float_parts not in FLOAT_PARTS:
        raise InputError(f"--float-parts {float_parts!r} is not one of {', '.join(FLOAT_PARTS)}")
    if float_parts != "float32" and (target == "ort" or bits != "w8a8" or hybrid):
        arch = "hybrid" if hybrid else "Mamba2" if mamba2 else "Mamba1"
        raise InputError(f"--float-parts {float_parts} applies to the TensorRT graph of a W8A8 Mamba1 or Mamba2 model; "
                         f"this export writes no such graph (--target {target}, {bits}, {arch})")
    log = _stderr if progress else (lambda _: None)
    out = Path(out)
    with atomic_output_dir(out, inputs) as tmp:
        qdir = tmp / QUANTIZED_DIR
        if kind == FP:
            log(f"quantizing {path} ({qconfig.calib_samples} calibration windows of {qconfig.calib_seq_len} tokens)")
        _make_artifact(source, qdir, model=model, calib_data=calib_data, qconfig=qconfig, tokenizer=tokenizer,
                       batch_size=batch_size, progress=progress)
        artifact = artifact or open_folder(qdir)  # a copy is byte-identical to the opened source
        reference = load_reference_model(artifact)
        if ort_only or hybrid:  # an ORT flavour only (lower_model / refuse_hybrid_export say why in one line)
            if target == "all":
                log("exporting the ort target only (--target tensorrt is not built for "
                    f"{'hybrid models' if hybrid else 'W4A16 Mamba2'} yet)")
            targets = ["ort" if target == "all" else target]
        log("lowering to ONNX")
        # both flavours are built and checked whatever the target (Mamba1 at every bit width with a static out_proj
        # scale, Mamba2 at W8A8 and W4A8); a per-token out_proj scale, W4A16 Mamba2 and hybrid models have the ORT
        # flavour only
        built = FLAVOURS if out_proj_scale == "static" and not (ort_only or hybrid) else ("ort",)
        parts = {"ort": "float32", "tensorrt": float_parts}
        lowered = {flavour: lower_hybrid_model(reference) if hybrid else
                   lower_model(use_float_parts(reference, parts[flavour]), flavour, progress=progress,
                               float_parts=parts[flavour]) for flavour in built}
        flavours = {name: to_tensorrt_flavour(graph) if name == "tensorrt" else graph
                    for name, graph in lowered.items()}
        for flavour, graph in flavours.items():
            onnx.checker.check_model(graph, full_check=True)
            problems = check_graph(graph, flavour)
            if problems:  # a lowering bug, not a user error: keep the traceback
                raise AssertionError(f"{flavour} graph: {len(problems)} problems, first: {problems[0]}")
        if "tensorrt" in targets:  # TensorRT 10.3's parser and headers, edge_quamba/onnx/tensorrt_rules.json
            require_tensorrt_conformance(flavours["tensorrt"], TRT_MODEL)
        written = []
        for name in targets:
            onnx.save(flavours[name], str(tmp / TARGET_FILES[name]))
            written.append(TARGET_FILES[name])
        shutil.copyfile(qdir / TOKENIZER, tmp / TOKENIZER)

        prompt = validation_prompt(qdir, calib_data, prompt_len)
        reports = {}
        for flavour in targets:
            log(f"validating the {flavour} graph on ONNX Runtime against the quantized reference ({prompt_len} "
                f"prompt tokens, {decode_steps} decode steps)")
            # the ORT flavour is validated as shipped; the TensorRT flavour before its nodes become plugin nodes
            # (the same graph with function bodies: ONNX Runtime cannot run plugins), from a scratch file
            model_file = tmp / ORT_MODEL if flavour == "ort" else tmp / ".tensorrt-validation.onnx"
            if flavour == "tensorrt":
                onnx.save(lowered["tensorrt"], str(model_file))
            use_float_parts(reference, parts[flavour])
            if hybrid:  # (a W4A16 hybrid graph is a float graph: validate_hybrid_on_ort says how it is compared)
                report = validate_hybrid_on_ort(lowered[flavour], model_file, reference, prompt, decode_steps,
                                                threads=threads, progress=progress, bits=bits)
            elif bits == "w4a16":
                report = validate_float_graph_on_ort(model_file, reference, prompt, decode_steps, threads=threads,
                                                     progress=progress, flavour=flavour)
            else:
                report = validate_on_ort(lowered[flavour], model_file, reference, prompt, decode_steps,
                                         threads=threads, progress=progress, flavour=flavour, bits=bits)
            if flavour == "tensorrt":
                model_file.unlink()
            reports[flavour] = _passed(report, out, echo)
        record = {"graph": QUANTIZED_GRAPH, "quantization": artifact.quant.to_dict(),
                  "calibration": artifact.record.get("calibration"), "source": artifact.record.get("source")}
        if "tensorrt" in targets:
            record["tensorrt_float_parts"] = float_parts
        config_file = write_export_config(tmp, _export_config(
            tmp, reference.config, targets, written, [f"{QUANTIZED_DIR}/{n}" for n in ARTIFACT_FILES], reports,
            lowered["ort"], record))
    files = [out / name for name in written] + [out / TOKENIZER, out / config_file.name]
    files += [out / QUANTIZED_DIR / name for name in ARTIFACT_FILES]
    return ExportResult(out=out, files=files, validation=reports)


def _passed(report: ValidationReport, out: Path, echo: Callable[[str], None]) -> ValidationReport:
    """Print the report's lines under its flavour; a ValidationError naming the first failed output unless all
    passed."""
    echo(f"[{report.flavour}]")
    for line in report.lines():
        echo(line)
    if not report.passed:
        failed = [c for c in report.checks if not c.passed]
        raise ValidationError(
            f"export validation of the {report.flavour} graph failed on {len(failed)} output(s), first "
            f"{failed[0].name}: max abs diff {failed[0].max_abs_diff:.3e} > {failed[0].tolerance:.3e}; "
            f"nothing was written to {out}")
    return report


def _export_config(folder: Path, model_config, targets: list[str], written: list[str], reference_files: list[str],
                   reports: dict[str, ValidationReport], graph: onnx.ModelProto, record: dict) -> dict:
    """export_config.json (before its seal); ``record``: graph, quantization, calibration and source."""
    shipped = written + [TOKENIZER] + reference_files
    state_in, state_out = graph_state_names(model_config)
    return {
        "kind": EXPORT.kind,
        "format_version": EXPORT_FORMAT_VERSION,
        "package_version": __version__,
        "model_config": model_config.to_dict(),
        **record,
        "targets": targets,
        "onnx": {
            "opset": next(o.version for o in graph.opset_import if o.domain == ""), "ir_version": graph.ir_version,
            "custom_domain": DOMAIN,
            "custom_ops": {name: spec.version for name, spec in SPECS.items()},
            "inputs": [INPUT_IDS, *state_in],
            "outputs": {"ort": [LOGITS, *state_out], "tensorrt": [LAST_LOGITS, *state_out]},
            "files": {"ort": ORT_MODEL if "ort" in targets else None,
                      "tensorrt": TRT_MODEL if "tensorrt" in targets else None},
            "tensorrt_tested": False,
        },
        "files": {name: file_sha256(folder / name) for name in shipped},
        "validation": {flavour: report.to_dict() for flavour, report in reports.items()},
    }


def export_fp32_model(
    *,
    model: str | None,
    out: str | Path,
    target: str = "ort",
    calib_data: str | Path | None = None,
    tokenizer: str | None = None,
    prompt_len: int = 128,
    decode_steps: int = 8,
    threads: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = _stderr,
    check: Check | None = None,
) -> ExportResult:
    """Export the fp checkpoint ``model`` (or the fp model of an fp32 export folder) unquantized into the folder
    ``out``: the float32 graph (ort target only), validated on ONNX Runtime against the float32 fp reference on the
    first ``prompt_len`` tokens of ``calib_data`` and ``decode_steps`` decode steps, and that reference in ``fp/``.
    ``target`` "all" writes the ort graph; "tensorrt" is refused (nothing fp32 was built or run with TensorRT)."""
    from safetensors.torch import save_file

    from edge_quamba.quant.pipeline import fp_source_record

    if target not in TARGETS:
        raise InputError(f"--target {target!r} is not one of {', '.join(TARGETS)}")
    if target == "tensorrt":
        raise InputError(NO_FP32_TENSORRT)
    check_validation_lengths(prompt_len, decode_steps)
    source = open_model(model, check=check)  # an export folder's files are verified, before anything is written
    path, kind = source.path, source.kind
    if source.fp32_export:  # re-export: its fp/ is an fp checkpoint
        fp_folder, source_record = source.reference, source.record.get("source")
    elif kind == FP:
        fp_folder, source_record = source, fp_source_record(source, model)
    else:
        raise InputError(f"--model {path} is a {kind} folder; --bits fp32 exports an fp checkpoint (the float32 "
                         f"graph of the unquantized model)")
    hybrid = isinstance(source.config, HybridConfig)  # (its own lowering and validation, below)
    inputs = [("--model", path)]
    check_output_dir(out, inputs)
    if calib_data is not None:
        read_calib_text(calib_data, 1 << 16)
    log = _stderr if progress else (lambda _: None)
    if target == "all":
        log("exporting the ort target only (--target tensorrt is not built for the fp32 graph)")
    reference = load_reference_model(fp_folder)  # float32
    tokenizer_file = Path(load_model_tokenizer(source, tokenizer).source)
    out = Path(out)
    with atomic_output_dir(out, inputs) as tmp:
        fp_dir = tmp / FP_DIR
        fp_dir.mkdir()
        # the reference as an fp checkpoint: its config.json, the float32 weights under the reference's names
        # (a tied lm_head is the embedding matrix: not stored twice), its tokenizer
        shutil.copyfile(fp_folder.path / FP_CONFIG, fp_dir / FP_CONFIG)
        state = {k: v.contiguous() for k, v in reference.state_dict().items()
                 if not (k == "lm_head.weight" and reference.config.tie_embeddings)}
        save_file(state, str(fp_dir / WEIGHTS), metadata={"format": "pt"})
        shutil.copyfile(tokenizer_file, fp_dir / TOKENIZER)
        shutil.copyfile(tokenizer_file, tmp / TOKENIZER)
        log("lowering to ONNX (float32)")
        graph = lower_hybrid_model(reference) if hybrid else lower_model(reference, "ort")
        onnx.checker.check_model(graph, full_check=True)
        problems = check_graph(graph, "ort")
        if problems:  # a lowering bug, not a user error: keep the traceback
            raise AssertionError(f"ort graph: {len(problems)} problems, first: {problems[0]}")
        onnx.save(graph, str(tmp / ORT_MODEL))
        prompt = validation_prompt(tmp, calib_data, prompt_len)
        log(f"validating the ort graph on ONNX Runtime against the fp32 reference ({prompt_len} prompt tokens, "
            f"{decode_steps} decode steps)")
        validate = validate_hybrid_float_on_ort if hybrid else validate_float_graph_on_ort
        report = _passed(validate(tmp / ORT_MODEL, reference, prompt, decode_steps, threads=threads,
                                  progress=progress, rtol=FP32_RTOL), out, echo)
        fp_files = [f"{FP_DIR}/{name}" for name in FP_REFERENCE_FILES]
        record = {"graph": FP32_GRAPH, "quantization": None, "calibration": None, "source": source_record}
        config_file = write_export_config(tmp, _export_config(tmp, reference.config, ["ort"], [ORT_MODEL], fp_files,
                                                              {"ort": report}, graph, record))
    files = [out / ORT_MODEL, out / TOKENIZER, out / config_file.name] + [out / name for name in fp_files]
    return ExportResult(out=out, files=files, validation={"ort": report})
