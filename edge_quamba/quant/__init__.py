"""Quantization: int8 primitives (the only code that rounds or clamps), calibration observers, Hadamard rotations."""
