"""Fake of the cuda-python namespace package (tests only): see cuda/bindings/runtime.py."""
