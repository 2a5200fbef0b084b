"""`edge-quamba quantize` as a library call: fp checkpoint + calibration text -> quantized artifact folder."""

from __future__ import annotations

from pathlib import Path

import torch

from edge_quamba.atomic import atomic_output_dir, check_output_dir
from edge_quamba.errors import InputError
from edge_quamba.folders import FP, folder_kind
from edge_quamba.models.config import Mamba2Config
from edge_quamba.models.hybrid_config import HybridConfig
from edge_quamba.models.loading import load_fp_config, load_fp_model, resolve_model
from edge_quamba.models.tokenizer import load_tokenizer
from edge_quamba.paths import require_regular_file
from edge_quamba.quant.artifact import file_sha256, write_artifact
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
) -> Path:
    """Calibrate and quantize ``model`` (an fp checkpoint) into the artifact folder ``out``; returns ``out``.

    A Mamba2 model takes ``--method quamba2`` (:func:`edge_quamba.quant.quamba2.quamba2_quantize`), a Mamba1 model
    Quamba. ``out`` is checked first (:func:`edge_quamba.atomic.check_output_dir`), so a refused folder costs no
    calibration."""
    path = resolve_model(model)
    kind = folder_kind(path)
    if kind != FP:
        raise InputError(f"--model {path} is a {kind} folder; quantize takes an fp checkpoint")
    config = load_fp_config(path)
    check_method(config, qconfig)  # before anything is written or loaded
    inputs = [("--model", path)]
    check_output_dir(out, inputs)
    calib_file = Path(calib_data) if calib_data is not None else default_calibration_file()
    require_regular_file(calib_file, f"--calib-data {calib_file}")
    fp_model = load_fp_model(path, dtype=torch.float32)
    tok = load_tokenizer(path, tokenizer, eos_token_id=fp_model.config.eos_token_id,
                         model_vocab_size=fp_model.config.vocab_size)
    data = load_calibration_data(calib_file, tok, qconfig.calib_samples, qconfig.calib_seq_len, qconfig.calib_seed)
    if isinstance(config, HybridConfig):  # Quamba2 Mamba2 blocks, int8 attention / MLP (hybrid_quant)
        from edge_quamba.quant.hybrid_quant import hybrid_quantize

        qmodel = hybrid_quantize(fp_model, data, qconfig, batch_size=batch_size, progress=progress)
    elif isinstance(config, Mamba2Config):  # Quamba2 (check_method made sure of the method)
        qmodel = quamba2_quantize(fp_model, data, qconfig, batch_size=batch_size, progress=progress)
    else:
        hessians = LinearHessians(config.n_layer, config.dt_rank) if qconfig.four_bit and qconfig.gptq else None
        amaxes = calibrate(fp_model, data, qconfig, batch_size=batch_size, progress=progress, hessians=hessians)
        qmodel = quantize_model(fp_model, amaxes, qconfig, None if hessians is None else hessians.hessians())
    source = {"model": model if model is not None else "demo", "config_sha256": _config_hash(path)}
    out = Path(out)
    with atomic_output_dir(out, inputs) as tmp:
        write_artifact(tmp, qmodel, qconfig, data.manifest(), source, Path(tok.source))
    return out


def _config_hash(path: Path) -> str:
    return file_sha256(path / "config.json")
