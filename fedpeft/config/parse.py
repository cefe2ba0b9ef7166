"""Flat run config → :class:`RunConfig`, once per process; the declared keys for docs and tests."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from flwr.common.config import flatten_dict

from .flat import ConfigError, KeyDoc, check, describe, from_flat
from .schema import PeftConfig, RunConfig
from .secagg_checks import check_secagg


def _method_classes() -> dict[str, type]:
    from peft_strategies import get_method, method_names

    return {name: get_method(name).config_cls for name in method_names()}


def _section_classes() -> dict[str, type]:
    """``model``, ``data``, ...: RunConfig's dataclass fields, but ``peft`` (parsed apart)."""
    return {
        f.name: f.default_factory  # type: ignore[misc]
        for f in dataclasses.fields(RunConfig)
        if f.default_factory is not dataclasses.MISSING and f.name != "peft"
    }


def declared_keys() -> list[KeyDoc]:
    """Every run-config key the schema declares, with default, help and choices, in order."""
    docs = describe(RunConfig, "")
    for name, cls in _section_classes().items():
        docs += describe(cls, f"{name}.")
        if name == "model":  # peft.* follows model.* as in pyproject.toml
            docs += describe(PeftConfig, "peft.")
            for method, mcls in _method_classes().items():
                docs += describe(mcls, f"peft.{method}.")
    return docs


def _method_params(flat: dict[str, Any], method: str) -> dict[str, Any]:
    params = {}
    for name, cls in _method_classes().items():
        try:
            parsed = from_flat(cls, f"peft.{name}.", flat)
        except ConfigError:
            raise
        except ValueError as exc:  # the method's own validation: "r=0: must be >= 1"
            raise ConfigError(f"peft.{name}.{exc}") from exc
        params[name] = parsed
    return params


def parse_run_config(run_config: dict[str, Any]) -> RunConfig:
    """Parse and validate a (flat or nested) run config.

    Raises
    ------
    ConfigError
        On an unknown key or an invalid value; the message names the key, the
        value and, for choices, the valid options.

    """
    flat = flatten_dict(dict(run_config))
    known = {d.key for d in declared_keys()}
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ConfigError(f"unknown run-config key(s) {unknown}; valid keys: {sorted(known)}")
    try:
        top = from_flat(RunConfig, "", flat)
        sections = {n: from_flat(c, f"{n}.", flat) for n, c in _section_classes().items()}
        method = from_flat(PeftConfig, "peft.", flat).method  # an unknown method fails here
        params = _method_params(flat, method)
        peft = PeftConfig(method=method, params=params[method], head=params["head"])
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    cfg = RunConfig(seed=top.seed, peft=peft, **sections)
    _check_across_sections(cfg)
    check_secagg(cfg)
    return cfg


def _check_across_sections(cfg: RunConfig) -> None:
    from fedpeft.codecs import CODECS
    from fedpeft.faults import ENCODING_MODES

    for pid, mode in cfg.fault.by_partition().items():
        needs = ENCODING_MODES.get(mode)
        uplink = cfg.comm.uplink
        check(needs is None or (CODECS[uplink].encodes and needs in ("", uplink)),
              "fault.modes", cfg.fault.modes,
              f"partition {pid}'s {mode!r} malforms an encoded reply: it needs comm.uplink="
              f"{needs or 'any codec but none'!r} (comm.uplink is {uplink!r})")  # fmt: skip
    check(
        cfg.dp.mode != "local" or not cfg.output.resume,
        "output.resume",
        True,
        "resuming a local-DP run would restart every client's privacy accountant "
        "(Context.state does not outlive a run), under-reporting ε; not supported",
    )
    check(
        cfg.dp.mode != "central" or cfg.server.aggregation == "fedavg",
        "server.aggregation",
        cfg.server.aggregation,
        "central DP (dp.mode='central') bounds the sensitivity of the mean only; use 'fedavg'",
    )
    check(
        cfg.dp.mode != "local" or cfg.train.precision in ("fp32", "auto"),
        "train.precision",
        cfg.train.precision,
        "with dp.mode='local': DP-SGD clips per-sample gradients computed in fp32 (checked "
        "against micro-batch ground truth); use 'fp32' or 'auto' (fp32 under local DP)",
    )
    check(
        not cfg.server.fraction_evaluate or cfg.data.local_test_fraction > 0,
        "server.fraction-evaluate",
        cfg.server.fraction_evaluate,
        "clients evaluate on images held out from their training: set "
        "data.local-test-fraction > 0 (e.g. 0.2)",
    )
    head = cfg.peft.head
    check(not head.local or cfg.peft.method != "head", "peft.head.local", True,
          "with peft.method='head' nothing would be federated")  # fmt: skip
    check(not head.local or head.init != "ncm", "peft.head.local", True,
          "peft.head.init='ncm' sets a shared head; a local one starts at timm's init")  # fmt: skip
    check(
        cfg.peft.head.init != "ncm" or not cfg.dp.enabled,
        "peft.head.init",
        "ncm",
        f"with dp.mode={cfg.dp.mode!r}: the clients' per-class feature sums would be released "
        "without noise or accounting; not supported under DP",
    )


@functools.lru_cache(maxsize=8)
def _parse(items: tuple[tuple[str, Any], ...]) -> RunConfig:
    return parse_run_config(dict(items))


def run_config(raw: Any) -> RunConfig:
    """Parse ``context.run_config`` once per process and run config."""
    return _parse(tuple(sorted(dict(raw).items())))
