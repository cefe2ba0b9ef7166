"""Several --run-config arguments merge key by key (flwr's own merge is shallow)."""

from __future__ import annotations

import math
import re

import pytest
from flwr.common.config import parse_config_args

from fedpeft.config import merge_overrides, to_arg


def test_flwr_merge_is_shallow_ours_is_per_key():
    # Prepare
    items = ["server.num-rounds=2 data.train-size=32", "server.min-train-nodes=3"]

    # Execute
    flwr_merged = parse_config_args(items)
    ours = merge_overrides(items)

    # Assert: flwr drops server.num-rounds (the baseline this module exists for)
    assert "server.num-rounds" not in flwr_merged
    assert ours == {"server.num-rounds": 2, "data.train-size": 32, "server.min-train-nodes": 3}


def test_later_items_win_and_preset_files_merge(tmp_path):
    # Prepare
    preset = tmp_path / "p.toml"
    preset.write_text('[peft]\nmethod = "bias"\n[peft.bias]\nlr = 0.01\n')

    # Execute
    merged = merge_overrides([str(preset), "peft.bias.lr=0.5 seed=3", "seed=4"])

    # Assert
    assert merged == {"peft.method": "bias", "peft.bias.lr": 0.5, "seed": 4}


def test_to_arg_round_trips_every_value_type():
    # Prepare
    values = {"a.s": "two words", "a.b": True, "c": False, "i": -3, "f": 1e-05,
              "g": float("-inf"), "e": ""}  # fmt: skip

    # Execute
    parsed = parse_config_args([to_arg(values)])

    # Assert
    assert parsed == values
    assert math.isinf(parsed["g"])


def test_text_that_is_not_a_pair_is_refused_not_dropped():
    # Prepare: spaces around '=' (flwr's parser returns {} for this item, silently)
    item = "server.clients-per-round = 2 seed=3"
    assert parse_config_args([item]) == {"seed": 3}

    # Execute / Assert
    expected = re.escape("'server.clients-per-round = 2' is not a key=value pair")
    with pytest.raises(ValueError, match=expected):
        merge_overrides([item])
    assert merge_overrides(["a.b='x y' c=\"p q\" d=1"]) == {"a.b": "x y", "c": "p q", "d": 1}
