"""`edge-quamba quantize` as a library call: fp checkpoint + calibration text -> quantized artifact folder."""

from __future__ import annotations

from pathlib import Path

import torch

from edge_quamba.atomic import atomic_output_dir, check_output_dir
from edge_quamba.errors import InputError
from edge_quamba.folders import Check, ModelFolder, load_model_tokenizer, open_model
from edge_quamba.integrity import file_sha256
from edge_quamba.kinds import FP, FP_CONFIG
from edge_quamba.models.config import Mamba2Config
from edge_quamba.models.hybrid_config import HybridConfig
from edge_quamba.models.loading import load_fp_model
from edge_quamba.paths import require_regular_file
from edge_quamba.quant.artifact import write_artifact
from edge_quamba.quant.calibrate import LinearHessians, calibrate, load_calibration_data
from edge_quamba.quant.config import QuantConfig, check_method
from edge_quamba.quant.qmodel import quantize_model
from edge_quamba.quant.quamba2 import quamba2_quantize
from edge_quamba.resources import default_calibration_file


def quantize_checkpoint(
    *,
    model: str | None,
    out: str | Path,
    calib_data: str | Path | None = None,
    qconfig: QuantConfig = QuantConfig(),
    tokenizer: str | None = None,
    batch_size: int = 8,
    progress: bool = True,
    check: Check | None = None,
) -> Path:
    """Calibrate and quantize ``model`` (an fp checkpoint) into the artifact folder ``out``; returns ``out``.

    A Mamba2 or hybrid model takes ``--method quamba2`` (:func:`edge_quamba.quant.quamba2.quamba2_quantize`), a Mamba1
    model Quamba. check: refusals run on the opened folder before anything else (the CLI's options that do not
    apply)."""
    def fp_only(folder: ModelFolder) -> None:
        if check is not None:
            check(folder)
        if folder.kind != FP:
            raise InputError(f"--model {folder.path} is a {folder.kind} folder; quantize takes an fp checkpoint")

    return quantize_folder(open_model(model, check=fp_only), out=out, calib_data=calib_data, qconfig=qconfig,
                           tokenizer=tokenizer, batch_size=batch_size, progress=progress, model_name=model)


def quantize_folder(folder: ModelFolder, *, out: str | Path, calib_data: str | Path | None, qconfig: QuantConfig,
                    tokenizer: str | None, batch_size: int, progress: bool, model_name: str | None) -> Path:
    """:func:`quantize_checkpoint` of an opened fp checkpoint folder (``export`` of an fp checkpoint calls this with
    the folder it opened). ``out`` is checked first (:func:`edge_quamba.atomic.check_output_dir`), so a refused
    folder costs no calibration. model_name: ``--model`` as given, recorded as the artifact's source."""
    path, config = folder.path, folder.config
    check_method(config, qconfig)  # before anything is written or loaded
    inputs = [("--model", path)]
    check_output_dir(out, inputs)
    calib_file = Path(calib_data) if calib_data is not None else default_calibration_file()
    require_regular_file(calib_file, f"--calib-data {calib_file}")
    # the calibration windows before the weights: a text too short for them is refused before the expensive load
    tok = load_model_tokenizer(folder, tokenizer)
    data = load_calibration_data(calib_file, tok, qconfig.calib_samples, qconfig.calib_seq_len, qconfig.calib_seed)
    fp_model = load_fp_model(folder.checkpoint, dtype=torch.float32)
    if isinstance(config, HybridConfig):  # Quamba2 Mamba2 blocks, int8 attention / MLP (hybrid_quant)
        from edge_quamba.quant.hybrid_quant import hybrid_quantize

        qmodel = hybrid_quantize(fp_model, data, qconfig, batch_size=batch_size, progress=progress)
    elif isinstance(config, Mamba2Config):  # Quamba2 (check_method made sure of the method)
        qmodel = quamba2_quantize(fp_model, data, qconfig, batch_size=batch_size, progress=progress)
    else:
        hessians = LinearHessians(config.n_layer, config.dt_rank) if qconfig.four_bit and qconfig.gptq else None
        amaxes = calibrate(fp_model, data, qconfig, batch_size=batch_size, progress=progress, hessians=hessians)
        qmodel = quantize_model(fp_model, amaxes, qconfig, None if hessians is None else hessians.hessians())
    out = Path(out)
    with atomic_output_dir(out, inputs) as tmp:
        write_artifact(tmp, qmodel, qconfig, data.manifest(), fp_source_record(folder, model_name),
                       Path(tok.source))
    return out


def fp_source_record(folder: ModelFolder, model_name: str | None) -> dict:
    """What an output records of the fp checkpoint it came from: ``--model`` as given and its config.json's sha256."""
    return {"model": model_name if model_name is not None else "demo",
            "config_sha256": file_sha256(folder.path / FP_CONFIG)}
