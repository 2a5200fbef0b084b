"""Loading an fp checkpoint, transformers or mamba_ssm layout (finding it: :mod:`edge_quamba.models.locate`).

What a folder holds is read from its JSON files (``quant_config.json``, ``export_config.json``, ``config.json``),
never from its name. Weights are read with safetensors or ``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from edge_quamba.errors import CheckpointError
from edge_quamba.models.config import Mamba2Config, ModelConfig, checkpoint_layout, read_json
from edge_quamba.models.hybrid import HybridLM, hybrid_reference_keys
from edge_quamba.models.hybrid_config import HybridConfig
from edge_quamba.models.mamba import MambaLM
from edge_quamba.models.mamba2 import Mamba2LM
# Finding a model and reading its config need no torch (the TensorRT backend runs without it): they live in locate.py
# and are imported from here by the commands that load weights too.
from edge_quamba.models.locate import (  # noqa: F401
    download_from_hub, load_fp_config, looks_like_hub_id, resolve_model,
)

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
    index = read_json(index_file)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index_file} has no weight_map")
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_file = index_file.parent / shard
        if not shard_file.is_file():
            raise CheckpointError(f"{index_file} names the shard {shard}, which is missing")
        state.update(loader(shard_file))
    return state


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
"""The weight formats read, in order of preference (safetensors first: its header gives shapes without reading data)."""


def weights_file(path: Path) -> Path:
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    raise CheckpointError(
        f"{path} holds no weights (model.safetensors, sharded safetensors or pytorch_model.bin)"
    )


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

TensorInfo = tuple[tuple[int, ...], str]
"""(shape, safetensors dtype name such as "F16" or "I8") of one tensor, read from a file header."""
SAFETENSORS_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                      torch.int64: "I64", torch.int32: "I32", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
EMBEDDING_KEY = "backbone.embeddings.weight"
LAYER_KEY = re.compile(r"^backbone\.layers\.(\d+)\.")


def safetensors_header(file: Path) -> dict[str, TensorInfo]:
    """Names, shapes and dtypes from a safetensors file's header only (no tensor data is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            return {key: (tuple(handle.get_slice(key).get_shape()), handle.get_slice(key).get_dtype())
                    for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{file} is not a readable safetensors file: {exc}") from None


def checkpoint_header(path: Path) -> dict[str, TensorInfo] | None:
    """Tensor infos of an fp checkpoint's safetensors weights (sharded too); None for pytorch_model.bin, which has
    no header (its shapes are checked after it is read, still before the model is built)."""
    file = weights_file(path)
    if file.name == "model.safetensors":
        return safetensors_header(file)
    if file.name == "model.safetensors.index.json":
        weight_map = read_json(file).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{file} has no weight_map")
        infos: dict[str, TensorInfo] = {}
        for shard in sorted(set(weight_map.values())):
            if not (path / shard).is_file():
                raise CheckpointError(f"{file} names the shard {shard}, which is missing")
            infos.update(safetensors_header(path / shard))
        return infos
    return None


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


def load_fp_model(path: Path, dtype: torch.dtype = torch.float32) -> MambaLM:
    """Build the fp reference model (Mamba1 or Mamba2) from a checkpoint folder (either layout), in ``dtype``, in
    eval mode.

    The weights' names and shapes are checked against config.json before the model is allocated (from the
    safetensors header when there is one), so a config that claims huge sizes fails at once."""
    config = load_fp_config(path)
    layout = checkpoint_layout(read_json(path / "config.json"))
    header = checkpoint_header(path)
    if header is not None:
        check_tensors(to_reference_keys(header, config, layout), _fp_state_template, config, path, "config.json",
                      check_dtypes=False)
    state = to_reference_keys(read_state_dict(path), config, layout)
    if header is None:
        infos = {key: (tuple(tensor.shape), "") for key, tensor in state.items()}
        check_tensors(infos, _fp_state_template, config, path, "config.json", check_dtypes=False)
    check_finite(state, path)
    model = fp_model_class(config)(config, dtype=dtype)
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False)
    return model.eval()
