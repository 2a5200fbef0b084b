"""The quantization recipe as data: :class:`QuantConfig` (every knob, validated, serialized into quant_config.json),
its defaults and its allowed values, and :func:`check_method` (which recipe a model takes).

No torch here: the opener (:mod:`edge_quamba.folders`) parses an artifact's quant_config.json into a QuantConfig in
processes that never load weights (``--backend tensorrt`` runs without PyTorch), and the command line builds one
before anything heavy is imported. The modules that compute with the knobs (primitives, observers, GPTQ) take their
defaults from here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edge_quamba.errors import ConfigError
from edge_quamba.models.config import Mamba2Config, ModelConfig
from edge_quamba.models.hybrid_config import HybridConfig
from edge_quamba.quant.sites import OUT_PROJ_SCALES, SITE_NAMES, default_percentile_sites

DEFAULT_GROUP_SIZE = 64
"""Columns (input features) per int4 weight scale. 64 rather than GPTQ's 128: with GPTQ in natural order it lowered
the perplexity of W4A8 and W4A16 on both demo models in all eight measured cases (README "Bit widths",
benchmarks/results/*_actorder*), for one more float32 scale per 32 bytes of packed weights (the linears' bytes +6%,
an artifact +2%)."""
DEFAULT_DAMP = 0.01
"""Fraction of the mean diagonal of H added to its diagonal (GPTQ's λ)."""
DEFAULT_PERCENTILE = 0.99999
"""Quamba's scan-input alpha for Mamba at 624361b (a fraction, not percent)."""
DEFAULT_MOMENTUM = 0.01
"""Quamba's EMA weight of each new batch (``percentile_sigma``)."""

QUANT_FORMAT_VERSION = 2
"""2: ``method`` is "quamba" (1 wrote "quamba-w8a8"), new keys ``bits``, ``group_size``, ``gptq``, ``gptq_damp``;
int4 weights stored packed. Version-1 configs still load (as method "quamba", bits "w8a8")."""
READABLE_FORMAT_VERSIONS = (1, 2)
METHODS = ("quamba", "quamba2")
BITS = ("w8a8", "w4a8", "w4a16")
"""Weight and activation bit widths: int8/int8, int4 group-wise/int8, int4 group-wise/float16."""
FOUR_BIT_LINEARS = ("in_proj", "x_proj", "dt_proj", "out_proj")
"""The linears that hold int4 weights at w4a8 and w4a16."""

KV_CACHE_DTYPES = ("float16", "int8")
"""QuantConfig.kv_cache: what a hybrid model's attention cache holds."""

WEIGHT_SCALES = ("tensor", "channel")
"""QuantConfig.weight_scales: one scale per weight tensor, or one per output channel (row) of each linear."""


@dataclass(frozen=True)
class QuantConfig:
    """Every knob of the recipe; serialized into quant_config.json.

    ``percentile`` clips the activations named in ``percentile_activations``; ``percentile=None`` means abs-max
    scales everywhere. Default (None here, resolved in ``__post_init__`` and stored resolved):
    :func:`edge_quamba.quant.sites.default_percentile_sites`: the scan input u (the paper) and the rotated out_proj
    input (beyond the paper: it measured better on both the demo and the large model, README "Quality"; the
    paper's recipe is ``percentile_activations=("u",)``), less out_proj_input when its scale is per token.
    Artifacts record the tuple they used, so older ones keep the paper's. The percentile knobs apply to Quamba
    (Mamba1).

    ``calib_seed``: None takes the first ``calib_samples`` windows of the calibration text in file order; an int
    draws the windows' start offsets with that seed (:func:`edge_quamba.quant.calibrate.load_calibration_data`), to
    measure how much the result depends on the calibration draw.
    ``weight_scales``: "tensor" (one scale per weight, the paper's) or "channel" (one scale per output row of each
    linear, :func:`edge_quamba.quant.primitives.quantize_weight_per_channel`); the conv1d weight stays per tensor.
    ``out_proj_scale``: "static" quantizes out_proj's input at the calibrated per-tensor scale of the site
    out_proj_input (the paper); "dynamic" at a per-token scale computed inside Hadamard + quantize (needs
    ``hadamard``; the site then has no static scale to calibrate or clip). An artifact written before this key
    existed reads as "static". Per-channel weights and the per-token scale are Quamba (Mamba1) W8A8 options.
    ``bits`` picks the config (module docstring); ``group_size``, ``gptq``, ``gptq_damp`` and ``gptq_act_order``
    shape the int4 weights of w4a8 / w4a16 (ignored at w8a8). ``gptq_act_order``: GPTQ's columns by decreasing
    Hessian diagonal with static group scales (:mod:`edge_quamba.quant.gptq`; the stored layout is the same); off by
    default (no consistent gain on the demo models, README "Bit widths"); an artifact written before this key
    existed reads as False (natural order, what it was quantized with).
    ``method`` "quamba2" is accepted here and refused for Mamba1 models by :func:`check_method`. At w4a16 nothing is
    quantized on the activation side: ``hadamard`` is recorded False and the percentile fields are unused.

    Quamba2 (``method="quamba2"``, Mamba2 models, :mod:`edge_quamba.quant.mamba2_qmodel`): ``sort_cluster`` reorders
    and groups the SSD input x (``head_groups`` x ``dim_groups`` scales per SSD group, capped at the heads per group
    and at headdim; off: one x scale); ``per_group_bc`` gives B and C one scale per state group (off: one each).

    Hybrid models (Mamba2 + attention, :mod:`edge_quamba.quant.hybrid_qmodel`; Quamba2 for their Mamba2 blocks):
    ``quantize_attn_mlp`` puts the attention and MLP linears at ``bits`` too (False: they stay float);
    ``kv_cache`` is "float16" or "int8" (static per-tensor scales of the keys and values; not at w4a16). Both are
    ignored for Mamba models.
    """

    method: str = "quamba"
    bits: str = "w8a8"
    group_size: int = DEFAULT_GROUP_SIZE
    gptq: bool = True
    gptq_damp: float = DEFAULT_DAMP
    gptq_act_order: bool = False
    percentile: float | None = DEFAULT_PERCENTILE
    percentile_momentum: float = DEFAULT_MOMENTUM
    percentile_activations: tuple[str, ...] | None = None
    hadamard: bool = True
    out_proj_scale: str = "static"
    calib_samples: int = 256
    calib_seq_len: int = 512
    calib_seed: int | None = None
    weight_scales: str = "tensor"
    sort_cluster: bool = True
    head_groups: int = 4
    dim_groups: int = 4
    per_group_bc: bool = True
    quantize_attn_mlp: bool = True
    kv_cache: str = "float16"
    format_version: int = QUANT_FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"quantization method {self.method!r} is not supported (supported: {', '.join(METHODS)})")
        if self.bits not in BITS:
            raise ConfigError(f"--bits {self.bits!r} is not one of {', '.join(BITS)}")
        if self.group_size < 1 or not self.gptq_damp > 0:
            raise ConfigError("--group-size must be >= 1 and the GPTQ damping > 0")
        if not isinstance(self.gptq_act_order, bool):
            raise ConfigError(f"gptq_act_order must be true or false, got {self.gptq_act_order!r}")
        if self.bits == "w4a16":  # no activation is quantized, so there is no int8 out_proj input to rotate
            object.__setattr__(self, "hadamard", False)
        if self.percentile is not None and not 0.0 < self.percentile <= 1.0:
            raise ConfigError(f"--percentile {self.percentile} must be a fraction in (0, 1], e.g. 0.99999")
        if self.out_proj_scale not in OUT_PROJ_SCALES:
            raise ConfigError(f"--out-proj-scale {self.out_proj_scale!r} is not one of {', '.join(OUT_PROJ_SCALES)}")
        if self.percentile_activations is None:
            object.__setattr__(self, "percentile_activations", default_percentile_sites(self.out_proj_scale))
        object.__setattr__(self, "percentile_activations", tuple(self.percentile_activations))  # JSON gives a list
        unknown = [a for a in self.percentile_activations if a not in SITE_NAMES]
        if unknown or not self.percentile_activations:
            raise ConfigError(f"percentile activations {list(self.percentile_activations)} must be a non-empty "
                              f"subset of {', '.join(SITE_NAMES)}")
        if self.out_proj_scale == "dynamic" and not self.hadamard:
            raise ConfigError("--out-proj-scale dynamic needs the Hadamard rotation (the per-token scale is computed "
                              "inside Hadamard + quantize); drop --no-hadamard")
        if self.out_proj_scale == "dynamic" and "out_proj_input" in self.percentile_activations:
            raise ConfigError("--percentile-on out_proj_input: with --out-proj-scale dynamic that site has no static "
                              "scale to clip")
        if self.calib_samples < 1 or self.calib_seq_len < 2:
            raise ConfigError("--calib-samples must be >= 1 and --calib-seq-len >= 2")
        if self.calib_seed is not None and (isinstance(self.calib_seed, bool) or not isinstance(self.calib_seed, int)
                                            or self.calib_seed < 0):
            raise ConfigError(f"--calib-seed {self.calib_seed!r} must be an integer >= 0")
        if self.weight_scales not in WEIGHT_SCALES:
            raise ConfigError(f"--weight-scales {self.weight_scales!r} must be one of {', '.join(WEIGHT_SCALES)}")
        if self.weight_scales == "channel" and self.out_proj_scale == "dynamic":
            raise ConfigError("--weight-scales channel with --out-proj-scale dynamic is not built: the per-token "
                              "out_proj op takes one weight scale; choose one of the two")
        w8a8_only = [flag for flag, on in (("--weight-scales channel", self.weight_scales == "channel"),
                                           ("--out-proj-scale dynamic", self.out_proj_scale == "dynamic")) if on]
        if w8a8_only and (self.bits != "w8a8" or self.method != "quamba"):
            raise ConfigError(f"{w8a8_only[0]} is a Quamba W8A8 option; it is not built for --method {self.method} "
                              f"--bits {self.bits}")
        if self.kv_cache not in KV_CACHE_DTYPES:
            raise ConfigError(f"--kv-cache {self.kv_cache!r} is not one of {', '.join(KV_CACHE_DTYPES)}")
        if self.kv_cache == "int8" and self.bits == "w4a16":
            raise ConfigError("--kv-cache int8 is built for w8a8 and w4a8 (a w4a16 model keeps float16 activations)")
        if not isinstance(self.quantize_attn_mlp, bool):
            raise ConfigError(f"quantize_attn_mlp must be true or false, got {self.quantize_attn_mlp!r}")
        if self.head_groups < 1 or self.dim_groups < 1:
            raise ConfigError("--head-groups and --dim-groups must be >= 1")
        if self.format_version not in READABLE_FORMAT_VERSIONS:
            raise ConfigError(f"quantized artifact format {self.format_version} is not one of "
                              f"{', '.join(map(str, READABLE_FORMAT_VERSIONS))}")
        if self.format_version == 1 and (self.method, self.bits) != ("quamba", "w8a8"):
            raise ConfigError("a format-1 quantized artifact can only be Quamba W8A8")

    @property
    def four_bit(self) -> bool:
        """int4 group-wise weights (w4a8, w4a16)."""
        return self.bits in ("w4a8", "w4a16")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "QuantConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown quantization config keys: {', '.join(unknown)}")
        if data.get("format_version") == 1 and data.get("method") == "quamba-w8a8":
            data = {**data, "method": "quamba"}  # format 1 named the one recipe it had "quamba-w8a8"
        if "gptq_act_order" not in data:  # written before act order existed: its GPTQ ran in natural order
            data = {**data, "gptq_act_order": False}
        return cls(**data)


def check_method(config: ModelConfig, qconfig: QuantConfig) -> None:
    """A one-line error for a recipe this model cannot take (called before calibration)."""
    if isinstance(config, HybridConfig):
        if qconfig.method != "quamba2":
            raise ConfigError("a hybrid model's Mamba2 layers are quantized with --method quamba2 (Quamba's recipe is "
                              "for Mamba1)")
        return
    if isinstance(config, Mamba2Config):
        if qconfig.method != "quamba2":
            raise ConfigError("a Mamba2 model is quantized with --method quamba2 (Quamba's recipe is for Mamba1)")
        return
    if qconfig.method == "quamba2":
        # Quamba2's additions over Quamba are sort-and-cluster of the scan input x by head and per-state-group
        # scales of B and C: both act on Mamba2's head/group structure. For Mamba1 it contributes the bit-width
        # configs and GPTQ weights, which --method quamba --bits w4a8|w4a16 already gives.
        raise ConfigError("--method quamba2 is Mamba2-only for now (sort-and-cluster and per-state-group B/C act on "
                          "Mamba2's heads); for Mamba1 use --method quamba with --bits w8a8, w4a8 or w4a16")
