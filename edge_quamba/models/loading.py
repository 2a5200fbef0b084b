"""Loading an fp checkpoint, transformers or mamba_ssm layout (finding it and reading its config.json:
:mod:`edge_quamba.models.locate`), and checking a weight file's tensors against a config before anything is allocated.

Weights are read with safetensors or ``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from edge_quamba.errors import CheckpointError
from edge_quamba.kinds import FP_CONFIG
from edge_quamba.models.config import Mamba2Config, ModelConfig
from edge_quamba.models.hybrid import HybridLM, hybrid_reference_keys
from edge_quamba.models.hybrid_config import HybridConfig
from edge_quamba.models.locate import FpCheckpoint, checkpoint_header, read_fp_checkpoint, shard_files, weights_file
from edge_quamba.models.mamba import MambaLM
from edge_quamba.models.mamba2 import Mamba2LM
from edge_quamba.safetensors_header import TensorInfo


def _load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file} is not a readable safetensors file: {exc}") from None


def _load_torch_bin(file: Path) -> dict[str, torch.Tensor]:
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it then refuses
            warnings.simplefilter("ignore")
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many unrelated types (UnpicklingError, RuntimeError, EOFError, ...)
        raise CheckpointError(f"{file} is not a readable PyTorch weights file: {_torch_load_failure(exc)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{file} does not hold a state dict")
    return state


PICKLED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _torch_load_failure(exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in a few words. Never torch's own message for a pickle
    it will not unpickle: that is several lines that advise ``weights_only=False``, i.e. running the file's code."""
    if isinstance(exc, pickle.UnpicklingError):
        found = PICKLED_GLOBAL.search(str(exc))
        if found:
            return f"it holds the Python object {found.group(1)}, which edge-quamba never unpickles (tensors only)"
        return "it is not a torch.save file of tensors only (edge-quamba never unpickles anything else)"
    if isinstance(exc, EOFError):
        return "it is empty or truncated"
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0]
    return first if "weights_only" not in first else "torch.load cannot read it"


def _load_sharded(index_file: Path, loader) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for shard in shard_files(index_file):
        state.update(loader(shard))
    return state


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder, from the first weights format found (safetensors preferred)."""
    file = weights_file(path)
    loaders = {
        "model.safetensors": _load_safetensors,
        "model.safetensors.index.json": lambda f: _load_sharded(f, _load_safetensors),
        "pytorch_model.bin": _load_torch_bin,
        "pytorch_model.bin.index.json": lambda f: _load_sharded(f, _load_torch_bin),
    }
    return loaders[file.name](file)


# -- sizes from the header, before anything is allocated ----------------------------------------------------------

SAFETENSORS_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                      torch.int64: "I64", torch.int32: "I32", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
EMBEDDING_KEY = "backbone.embeddings.weight"
LAYER_KEY = re.compile(r"^backbone\.layers\.(\d+)\.")


def expected_tensors(build, config: ModelConfig) -> dict[str, TensorInfo]:
    """Shapes and dtypes of ``build(config)``'s state dict without allocating it: ``build`` runs on the meta device
    with one layer, whose entries are repeated for every layer. Call only after :func:`check_layer_count` (a
    config claiming a million layers must not make a million-entry dict)."""
    import dataclasses

    if isinstance(config, HybridConfig):  # blocks differ: build them all (at most MAX_BLOCKS, on meta: cheap)
        with torch.device("meta"):
            return {key: (tuple(t.shape), SAFETENSORS_DTYPES.get(t.dtype, str(t.dtype)))
                    for key, t in build(config).items()}
    with torch.device("meta"):
        one = build(dataclasses.replace(config, n_layer=1))
    expected: dict[str, TensorInfo] = {}
    for key, tensor in one.items():
        info = (tuple(tensor.shape), SAFETENSORS_DTYPES.get(tensor.dtype, str(tensor.dtype)))
        if key.startswith("backbone.layers.0."):
            for index in range(config.n_layer):
                expected[f"backbone.layers.{index}." + key[len("backbone.layers.0."):]] = info
        else:
            expected[key] = info
    return expected


def check_tensors(found: dict[str, TensorInfo], build, config: ModelConfig, source: Path, config_name: str,
                  check_dtypes: bool) -> None:
    """The tensors a weight file holds (``found``) against what ``config_name`` implies, before any allocation:
    layer count first, then names, shapes and (``check_dtypes``) dtypes. One-line CheckpointError on a mismatch."""
    layers = {int(m.group(1)) for key in found if (m := LAYER_KEY.match(key))}
    if len(layers) != config.n_layer or (layers and max(layers) != config.n_layer - 1):
        raise CheckpointError(f"{source}: {config_name} says {config.n_layer} layers, the weights hold "
                              f"{len(layers)}")
    embedding = found.get(EMBEDDING_KEY)
    if embedding is not None and embedding[0] != (config.vocab_size, config.d_model):
        raise CheckpointError(f"{source}: weight {EMBEDDING_KEY} has shape {embedding[0]}, {config_name} implies "
                              f"{(config.vocab_size, config.d_model)} (vocab_size, d_model)")
    try:
        expected = expected_tensors(build, config)
    except RuntimeError as exc:  # sizes whose byte count overflows int64, even on the meta device
        raise CheckpointError(f"{source}: {config_name} holds impossible sizes ({exc})") from None
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{source}: weights do not match {config_name} ({detail})")
    for key, (shape, dtype) in found.items():
        want_shape, want_dtype = expected[key]
        if shape != want_shape or (check_dtypes and dtype != want_dtype):
            what = f"{dtype}{shape}" if check_dtypes else f"shape {shape}"
            want = f"{want_dtype}{want_shape}" if check_dtypes else f"{want_shape}"
            raise CheckpointError(f"{source}: weight {key} has {what}, {config_name} implies {want}")


def to_reference_keys(state: dict, config: ModelConfig, layout: str) -> dict:
    """Rename checkpoint keys to the reference module's names and drop a tied lm_head (values are kept as they
    are: tensors, or header infos)."""
    renamed = {}
    for key, tensor in state.items():
        if isinstance(config, HybridConfig):
            key = hybrid_reference_keys(key, config)
        elif layout == "mamba_ssm":
            key = key.replace("backbone.embedding.", "backbone.embeddings.")
        renamed[key] = tensor
    if config.tie_embeddings:
        renamed.pop("lm_head.weight", None)
    return renamed


def check_finite(state: dict[str, torch.Tensor], source: Path) -> None:
    for key, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{source}: weight {key} holds NaN or Inf values")


def fp_model_class(config: ModelConfig) -> type[MambaLM]:
    """The reference model class for a config: :class:`Mamba2LM` for Mamba2, :class:`HybridLM` for a hybrid,
    :class:`MambaLM` for Mamba1."""
    if isinstance(config, HybridConfig):
        return HybridLM
    return Mamba2LM if isinstance(config, Mamba2Config) else MambaLM


def _fp_state_template(config: ModelConfig) -> dict[str, torch.Tensor]:
    state = fp_model_class(config)(config).state_dict()
    if config.tie_embeddings:
        state.pop("lm_head.weight")
    return state


def check_fp_header(checkpoint: FpCheckpoint, header: dict[str, TensorInfo]) -> None:
    """An fp checkpoint's safetensors header (:func:`edge_quamba.models.locate.checkpoint_header`) against its
    config.json: layer count, names and shapes (the opener runs this before anything is read)."""
    check_tensors(to_reference_keys(header, checkpoint.config, checkpoint.layout), _fp_state_template,
                  checkpoint.config, checkpoint.path, FP_CONFIG, check_dtypes=False)


def load_fp_model(checkpoint: FpCheckpoint | Path | str, dtype: torch.dtype = torch.float32) -> MambaLM:
    """Build the fp reference model (Mamba1, Mamba2 or hybrid) of a checkpoint folder (either layout), in ``dtype``,
    in eval mode. ``checkpoint``: as an opened folder holds it (``ModelFolder.checkpoint``: config.json already read,
    its safetensors header already checked by the opener), or a folder's path (scripts and tests: config.json is read
    and the header checked here).

    The weights' names and shapes are checked against config.json before the model is allocated (from the
    safetensors header when there is one, else after reading pytorch_model.bin), so a config that claims huge sizes
    fails at once."""
    if not isinstance(checkpoint, FpCheckpoint):
        checkpoint = read_fp_checkpoint(Path(checkpoint))
        header = checkpoint_header(checkpoint.path)
        if header is not None:
            check_fp_header(checkpoint, header)
    path, config = checkpoint.path, checkpoint.config
    state = to_reference_keys(read_state_dict(path), config, checkpoint.layout)
    if weights_file(path).name.startswith("pytorch_model"):  # no header: the shapes are checked now
        infos = {key: (tuple(tensor.shape), "") for key, tensor in state.items()}
        check_tensors(infos, _fp_state_template, config, path, FP_CONFIG, check_dtypes=False)
    check_finite(state, path)
    model = fp_model_class(config)(config, dtype=dtype)
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)
    return model.eval()
