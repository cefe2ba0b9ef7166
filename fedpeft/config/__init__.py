"""The one home of the configuration: schema, flat-key parsing and the ``--run-config`` merge.

* :mod:`.schema`, :mod:`.server`, :mod:`.dp`, :mod:`.fault`, :mod:`.comm`,
  :mod:`.secagg`: the frozen dataclasses of
  ``[tool.flwr.app.config]``; each field declares its key's default and meaning once.
  PEFT methods declare their ``peft.<method>.*`` keys beside their code.
* :mod:`.flat`: kebab-case dotted keys ↔ fields, type checks, registry choices.
* :mod:`.parse`: :func:`parse_run_config` (the only reader of a raw run config) and the
  per-process :func:`run_config`.
* :mod:`.merge`: several ``--run-config`` arguments merged key by key.
* :mod:`.node`: a SuperNode's ``--node-config``.
* :mod:`.recorded`: the config a run recorded in ``metrics.json`` → :class:`RunConfig`.
* :mod:`.docs`: the key table of docs/CONFIG.md, generated.
"""

from .comm import CommConfig
from .dp import DpConfig
from .fault import FaultConfig
from .flat import ConfigError, KeyDoc, check
from .merge import app_config, merge_overrides, to_arg
from .node import NodeConfig, node_config_arg, parse_node_config
from .parse import declared_keys, parse_run_config, run_config
from .recorded import config_from_record
from .schema import DataConfig, ModelConfig, PeftConfig, RunConfig, TrainConfig
from .secagg import SecAggConfig
from .server import OutputConfig, ServerConfig

__all__ = [
    "CommConfig",
    "ConfigError",
    "DataConfig",
    "DpConfig",
    "FaultConfig",
    "KeyDoc",
    "ModelConfig",
    "NodeConfig",
    "OutputConfig",
    "PeftConfig",
    "RunConfig",
    "SecAggConfig",
    "ServerConfig",
    "TrainConfig",
    "app_config",
    "check",
    "config_from_record",
    "declared_keys",
    "merge_overrides",
    "node_config_arg",
    "parse_node_config",
    "parse_run_config",
    "run_config",
    "to_arg",
]
