"""One set of defaults, documented once, choices from the registries that implement them."""

from __future__ import annotations

import math

import pytest
import tomllib
from flwr.common.config import flatten_dict

from fedpeft.aggregation import RULES
from fedpeft.config import ConfigError, declared_keys, parse_run_config
from fedpeft.config import docs as config_docs
from fedpeft.data.builtin import BUILTIN_DATASETS
from fedpeft.data.partitioners import PARTITIONERS
from fedpeft.data.sources import SOURCES
from fedpeft.registry import Registry
from tests.conftest import ROOT


def _pyproject() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return flatten_dict(tomllib.load(f)["tool"]["flwr"]["app"]["config"])


def test_every_pyproject_key_has_a_schema_field_and_the_reverse():
    # Prepare
    declared = {d.key for d in declared_keys()}
    # Execute
    in_pyproject = set(_pyproject())
    # Assert
    assert sorted(in_pyproject - declared) == []  # pyproject keys without a field
    assert sorted(declared - in_pyproject) == []  # fields missing from pyproject


def test_pyproject_defaults_equal_the_schema_defaults():
    # Prepare
    pyproject = _pyproject()
    # Execute
    differ = {
        d.key: (pyproject[d.key], d.default)
        for d in declared_keys()
        if d.key in pyproject
        and (type(pyproject[d.key]) is not type(d.default) or pyproject[d.key] != d.default)
        and not (isinstance(d.default, float) and math.isclose(pyproject[d.key], d.default))
    }
    # Assert
    assert differ == {}  # key: (pyproject, schema)


def test_schema_defaults_alone_parse_like_pyproject():
    # Execute: the schema's defaults with no run config at all
    alone, with_pyproject = parse_run_config({}), parse_run_config(_pyproject())
    # Assert
    assert alone == with_pyproject


def test_every_key_is_documented_where_it_is_declared():
    undocumented = [d.key for d in declared_keys() if len(d.help) < 8]
    assert undocumented == []


def test_config_reference_table_is_the_generated_one():
    # Prepare
    reference = (ROOT / config_docs.DEFAULT_PATH).read_text()
    # Execute
    rendered = config_docs.render(reference)
    # Assert: `python -m fedpeft.config.docs` rewrites it
    assert reference == rendered


def test_config_table_lists_every_key_with_its_registered_choices():
    table = config_docs.table()
    assert all(f"| `{d.key}` |" in table for d in declared_keys())
    assert all(f"`{name}`" in table for name in RULES.names())
    assert all(f"`{name}`" in table for name in SOURCES.names())


@pytest.mark.parametrize(
    ("registry", "key", "extra"),
    [
        (RULES, "server.aggregation", {}),
        (SOURCES, "data.source", {"data.dataset": "anything"}),
        (PARTITIONERS, "data.partitioner", {}),
        (BUILTIN_DATASETS, "data.dataset", {}),
    ],
)
def test_a_new_registration_is_a_valid_choice_with_no_second_list(
    monkeypatch, registry, key, extra
):
    # Prepare: one registration, nothing else
    monkeypatch.setattr(registry, "_items", dict(registry._items))
    with pytest.raises(ConfigError, match=rf"{key}='my-new'.*choose one of"):
        parse_run_config({key: "my-new", **extra})
    registry.add("my-new", object())
    # Execute
    cfg = parse_run_config({key: "my-new", **extra})
    # Assert: valid in the config, listed in the docs
    section, _, name = key.partition(".")
    assert getattr(getattr(cfg, section), name.replace("-", "_")) == "my-new"
    assert "`my-new`" in config_docs.table()


def test_unknown_choices_list_the_registered_ones():
    with pytest.raises(ConfigError) as info:
        parse_run_config({"server.aggregation": "mean"})
    assert str(RULES.names()) in str(info.value)


def test_registry_refuses_a_duplicate_name():
    registry: Registry[int] = Registry("thing")
    registry.add("a", 1)
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        registry.add("a", 2)
    with pytest.raises(ValueError, match=r"k='b': unknown thing; choose one of \['a'\]"):
        registry.get("b", "k")
