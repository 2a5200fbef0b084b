"""Fake of cuda.bindings (tests only): only the runtime module is faked."""
