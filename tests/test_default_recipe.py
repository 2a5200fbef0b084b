"""The default Quamba recipe's clipped sites (changed from the paper's on the evidence of the quality table)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from edge_quamba.cli import cli
from edge_quamba.errors import ConfigError
from edge_quamba.quant.qmodel import QuantConfig
from edge_quamba.quant.sites import DEFAULT_PERCENTILE_SITES, PAPER_PERCENTILE_SITES, default_percentile_sites


def test_default_clips_u_and_the_rotated_out_proj_input():
    assert QuantConfig().percentile_activations == ("u", "out_proj_input") == DEFAULT_PERCENTILE_SITES
    assert PAPER_PERCENTILE_SITES == ("u",)


def test_a_per_token_out_proj_scale_drops_its_site_from_the_default_only():
    assert QuantConfig(out_proj_scale="dynamic").percentile_activations == ("u",) == default_percentile_sites("dynamic")
    with pytest.raises(ConfigError, match="--percentile-on out_proj_input"):
        QuantConfig(out_proj_scale="dynamic", percentile_activations=("u", "out_proj_input"))


def test_a_recorded_config_keeps_its_sites():
    """An artifact written with the paper's recipe reads back with it: the default never rewrites a recorded tuple."""
    paper = QuantConfig(percentile_activations=PAPER_PERCENTILE_SITES)
    assert QuantConfig.from_dict(paper.to_dict()).percentile_activations == ("u",)
    assert QuantConfig.from_dict(QuantConfig().to_dict()) == QuantConfig()


def test_cli_help_names_the_default_sites():
    result = CliRunner().invoke(cli, ["quantize", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "u,out_proj_input" in " ".join(result.output.split())
