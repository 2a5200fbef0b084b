"""Files shipped with the package: the demo models (Mamba1 and Mamba2) and the calibration / evaluation text splits.

The splits live in the repository's top-level ``calib_data/`` (manifest.json, the splits, and the script that
builds a calibration set from a user's text). setup.py installs that folder inside the package as
``edge_quamba/calib_data``, so both layouts are found: an installed wheel (the folder in the package) and a source
checkout or editable install (the folder next to the package).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from edge_quamba.errors import InputError

CALIB_MANIFEST = "manifest.json"
DEMO_MODELS = {"demo": "demo_model", "demo-mamba2": "demo_model_mamba2", "demo-hybrid": "demo_model_hybrid"}
"""``--model`` names of the shipped demo models -> their folder under assets/. No ``--model`` means "demo"."""
DEFAULT_DEMO = "demo"


def assets_dir() -> Path:
    return Path(str(resources.files("edge_quamba") / "assets"))


def demo_model_dir(name: str = DEFAULT_DEMO) -> Path:
    """A small model trained by export/recipes/train_demo.py (transformers layout, fp16 safetensors, the same
    tokenizer and corpus): "demo" is the Mamba1 one, "demo-mamba2" the Mamba2 one (``--arch mamba2``);
    "demo-hybrid" is a tiny Nemotron-H (Mamba2 + attention + MLP blocks) from export/recipes/train_demo_hybrid.py."""
    return assets_dir() / DEMO_MODELS[name]


def calib_data_dir() -> Path:
    """The shipped calib_data folder: inside the installed package first, else the source checkout's top level."""
    package = Path(str(resources.files("edge_quamba")))
    for candidate in (package / "calib_data", package.parent / "calib_data"):
        if (candidate / CALIB_MANIFEST).is_file():
            return candidate
    raise InputError(f"the shipped calibration data is missing (looked in {package / 'calib_data'} and "
                     f"{package.parent / 'calib_data'}); reinstall edge-quamba or pass --calib-data / --data")


def default_calibration_file() -> Path:
    """The calibration split of the demo corpus (calib_data/manifest.json says where it comes from)."""
    return calib_data_dir() / "calibration.txt"


def default_evaluation_file() -> Path:
    """The held-out evaluation split of the demo corpus (no overlap with training or calibration)."""
    return calib_data_dir() / "evaluation.txt"
