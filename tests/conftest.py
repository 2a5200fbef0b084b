import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


def pytest_collection_modifyitems(config, items):
    """`cuda` tests skip where no NVIDIA GPU is present (CI), instead of failing."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def demo_quantized(tmp_path_factory):
    """The demo model quantized at W8A8 (once per session: the cuda backend tests and the device-greedy tests share
    it; it takes tens of seconds)."""
    from edge_quamba.quant.pipeline import quantize_checkpoint
    from edge_quamba.quant.qmodel import QuantConfig

    return quantize_checkpoint(model=None, out=tmp_path_factory.mktemp("demo") / "q",
                               qconfig=QuantConfig(calib_samples=8, calib_seq_len=128), progress=False)


@pytest.fixture(scope="session")
def hostile_folders(tmp_path_factory):
    """helpers.fp_quantized_export_folders, once per session (test_hostile.py and test_hostile_processes.py)."""
    from helpers import fp_quantized_export_folders

    return fp_quantized_export_folders(tmp_path_factory.mktemp("hostile"))
