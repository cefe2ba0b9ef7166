"""Run-config parsing: defaults, overrides and clear errors."""

from __future__ import annotations

import pytest

from fedpeft.config import ConfigError, parse_run_config


def test_pyproject_defaults_parse(pyproject_config):
    cfg = parse_run_config(pyproject_config)
    assert cfg.peft.method == "lora"
    assert cfg.model.img_size == 56
    assert cfg.lr == pytest.approx(0.005)
    assert cfg.data.dirichlet__alpha == pytest.approx(0.5)


def test_flat_keys_parse_like_flower_passes_them(pyproject_config):
    flat = {"peft.method": "bias", "peft.bias.lr": 0.01, "data.dirichlet.alpha": 0.1}
    cfg = parse_run_config(flat)
    assert cfg.peft.method == "bias"
    assert cfg.lr == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("flat", "pattern"),
    [
        ({"peft.method": "nope"}, r"peft.method='nope'.*choose one of.*lora"),
        ({"data.dirichlet.alpha": 0.0}, r"data.dirichlet.alpha=0.0.*> 0"),
        ({"data.dirichlet.alpha": -1}, r"data.dirichlet.alpha=-1"),
        ({"data.dataset": "cifar-1000"}, r"data.dataset='cifar-1000'.*fashion-mnist"),
        ({"data.source": "ftp"}, r"data.source='ftp'.*builtin"),
        ({"data.partitioner": "zipf"}, r"data.partitioner='zipf'.*dirichlet"),
        ({"peft.lora.r": 0}, r"peft.lora.r=0"),
        ({"peft.lora.r": "8"}, r"peft.lora.r='8'.*integer"),
        ({"train.epochs": 0}, r"train.epochs=0"),
        ({"server.fraction-train": 1.5}, r"server.fraction-train=1.5"),
        ({"peft.lora.rank": 4}, r"unknown run-config key.*peft.lora.rank"),
        ({"model.img-size": 4}, r"model.img-size=4"),
        ({"server.aggregation": "mean"}, r"server.aggregation='mean'.*trimmed-mean"),
        ({"server.trim-beta": 0.5}, r"server.trim-beta=0.5.*\[0, 0.5\)"),
        ({"server.krum.byzantine": -1}, r"server.krum.byzantine=-1"),
        (
            {"server.aggregation": "krum", "server.krum.byzantine": 2},
            r"server.min-train-nodes=2: krum with .*byzantine=2 needs at least 2f \+ 3 = 7",
        ),
        ({"server.min-replies": 0}, r"server.min-replies=0"),
        ({"server.evaluate-every": 0}, r"server.evaluate-every=0"),
        ({"server.max-update-norm": -1.0}, r"server.max-update-norm=-1.0"),
        ({"output.resume": True}, r"output.resume=True.*output.run-name"),
        ({"fault.modes": "0:explode"}, r"fault.modes='0:explode'.*sign-flip"),
        ({"fault.dropout": 1.0}, r"fault.dropout=1.0"),
        ({"data.local-test-fraction": 0.6}, r"data.local-test-fraction=0.6.*\[0, 0.5\]"),
        (
            {"server.fraction-evaluate": 0.5},
            r"server.fraction-evaluate=0.5.*data.local-test-fraction > 0",
        ),
        (
            {"peft.method": "head", "peft.head.local": True},
            r"peft.head.local=True.*nothing would be federated",
        ),
        ({"peft.head.local": True, "peft.head.init": "ncm"}, r"peft.head.local=True.*ncm"),
        ({"peft.lora.federation": "hetlora"}, r"federation='hetlora'.*rolora"),
    ],
)
def test_bad_values_name_the_key(flat, pattern):
    with pytest.raises(ConfigError, match=pattern):
        parse_run_config(flat)


def test_config_is_frozen(pyproject_config):
    cfg = parse_run_config(pyproject_config)
    with pytest.raises(AttributeError):
        cfg.seed = 1  # type: ignore[misc]
