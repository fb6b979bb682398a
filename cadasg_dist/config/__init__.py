"""Typed run configuration: the one source of defaults.

The CLI flags, the YAML files in ``configs/`` and the Flower run config all parse into
``CADASGConfig``; nothing else holds a default. ``sections`` holds the section dataclasses,
``core`` the whole config and its cross-section checks, ``parsing`` the YAML / ``--set`` /
coercion machinery, and ``flags`` the one mapping from flag names to config keys.
"""

from cadasg_dist.config.core import CADASGConfig, validate
from cadasg_dist.config.flags import FLAG_KEYS, csv_list, flag_overrides, split_section
from cadasg_dist.config.parsing import (
    build_dataclass,
    parse_overrides,
    read_yaml,
    read_yaml_mapping,
    require,
    to_plain,
)
from cadasg_dist.config.sections import (
    CacheConfig,
    ColumnKind,
    ColumnOverride,
    ConstraintConfig,
    ContextConfig,
    DataConfig,
    DistributedConfig,
    LossConfig,
    ModelConfig,
    PrivacyConfig,
    TrainConfig,
)

__all__ = [
    "FLAG_KEYS", "CADASGConfig", "CacheConfig", "ColumnKind", "ColumnOverride", "ConstraintConfig", "ContextConfig",
    "DataConfig", "DistributedConfig", "LossConfig", "ModelConfig", "PrivacyConfig", "TrainConfig", "build_dataclass",
    "csv_list", "flag_overrides", "parse_overrides", "read_yaml", "read_yaml_mapping", "require",
    "split_section", "to_plain", "validate",
]
