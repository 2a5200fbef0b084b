"""Generation loop, sampling, backends and benchmark timing."""

BACKENDS = ("ref", "ort", "cuda", "tensorrt")

SEED_MAX = 2**64 - 1
"""The largest --seed (a 64-bit seed; numpy.random.default_rng, the sampler's generator, takes any int >= 0)."""
