"""The custom ops of edge-quamba: one spec each (specs.py), their PyTorch custom ops (torch_ops.py) and the TensorRT
plugin fields derived from the specs (plugins.py)."""

from edge_quamba.ops.specs import DOMAIN, SPECS, AttrSpec, OpSpec, TensorSpec

__all__ = ["DOMAIN", "SPECS", "AttrSpec", "OpSpec", "TensorSpec"]
