"""Files shipped inside the package: the demo model and the calibration / evaluation text splits."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def assets_dir() -> Path:
    return Path(str(resources.files("edge_quamba") / "assets"))


def demo_model_dir() -> Path:
    """The small Mamba trained by export/recipes/train_demo.py (transformers layout, fp16 safetensors)."""
    return assets_dir() / "demo_model"


def default_calibration_file() -> Path:
    """The calibration split of the demo corpus (calib_data/manifest.json says where it comes from)."""
    return assets_dir() / "calib_data" / "calibration.txt"


def default_evaluation_file() -> Path:
    """The held-out evaluation split of the demo corpus (no overlap with training or calibration)."""
    return assets_dir() / "calib_data" / "evaluation.txt"
