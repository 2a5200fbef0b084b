"""Generation loop, sampling, backends and benchmark timing."""

BACKENDS = ("ref", "ort", "cuda", "tensorrt")

SEED_MAX = 2**64 - 1
"""The largest --seed (torch.Generator.manual_seed takes 0 .. 2**64-1)."""
