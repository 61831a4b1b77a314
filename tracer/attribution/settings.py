"""What every engine reads from its :class:`tracer.config.AttributionConfig`, resolved once."""

import torch

from tracer.config import AttributionConfig

_ADJ_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
               "float16": torch.float16}


def as_config(config: object) -> AttributionConfig:
    """`config` itself, or the defaults for None; anything else (a dict, another config) is a TypeError."""
    if config is None:
        return AttributionConfig()
    if not isinstance(config, AttributionConfig):
        raise TypeError(f"config must be an AttributionConfig or None; got {type(config).__name__}. Pass "
                        "AttributionConfig(...), e.g. AttributionConfig(max_feature_nodes=100).")
    return config


def adjacency_dtype(cfg: AttributionConfig, model_dtype: torch.dtype) -> torch.dtype:
    """The adjacency's storage dtype: the configured one, or for 'auto' float64 with float64 models,
    else float32. Both engines compute rows in the model's dtype and store them in this one."""
    if cfg.adjacency_dtype == "auto":
        return torch.float64 if model_dtype == torch.float64 else torch.float32
    return _ADJ_DTYPES[cfg.adjacency_dtype]
