"""Generation loop, sampling, backends and benchmark timing."""

BACKENDS = ("ref", "ort", "cuda", "tensorrt")
