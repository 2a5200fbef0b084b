"""A hybrid graph's state inputs and outputs (import-light: the ORT backend reads it without torch's model code).

Per block, in block order: a Mamba2 block's ``conv_state.{i}`` (b, conv_dim, k) and ``ssm_state.{i}`` (b, h, p, n)
-> ``conv_state_out.{i}``, ``ssm_state_out.{i}``; an attention block's ``past_key.{i}`` and ``past_value.{i}``
(b, kv, t, e) -> ``present_key.{i}``, ``present_value.{i}`` (b, kv, t + l, e); an MLP block has none.
"""

from __future__ import annotations

import numpy as np

from edge_quamba.models.hybrid_config import HybridConfig

ELEM_DTYPES = {"tensor(int8)": np.int8, "tensor(float16)": np.float16, "tensor(float)": np.float32}


def hybrid_state_names(config: HybridConfig) -> tuple[list[str], list[str]]:
    """(state inputs, state outputs), block by block (module docstring)."""
    inputs, outputs = [], []
    for i, kind in enumerate(config.pattern):
        if kind == "M":
            inputs += [f"conv_state.{i}", f"ssm_state.{i}"]
            outputs += [f"conv_state_out.{i}", f"ssm_state_out.{i}"]
        elif kind == "*":
            inputs += [f"past_key.{i}", f"past_value.{i}"]
            outputs += [f"present_key.{i}", f"present_value.{i}"]
    return inputs, outputs


def hybrid_empty_states(config: HybridConfig, batch: int, input_types: dict[str, str]) -> dict[str, np.ndarray]:
    """Zero states in each input's declared element type (ONNX Runtime's type strings): conv states (b, conv_dim, k),
    ssm states (b, h, p, n), empty caches (b, kv, 0, e)."""
    m2 = config.mamba2()
    shapes = {"conv_state": (batch, m2.conv_dim, m2.d_conv), "ssm_state": (batch, m2.nheads, m2.headdim, m2.d_state),
              "past_key": (batch, config.n_kv_heads, 0, config.head_dim),
              "past_value": (batch, config.n_kv_heads, 0, config.head_dim)}
    return {name: np.zeros(shapes[name.split(".")[0]], ELEM_DTYPES[input_types[name]])
            for name in hybrid_state_names(config)[0]}
