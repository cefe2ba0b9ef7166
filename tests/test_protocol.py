"""The protocol's names: Flower's where Flower defines them; its scalar checks."""

from __future__ import annotations

import inspect
import math

import pytest
from flwr.serverapp.strategy import FedAvg

from fedpeft import protocol


def test_record_names_and_weight_key_are_fedavgs_defaults():
    params = inspect.signature(FedAvg.__init__).parameters
    assert params["arrayrecord_key"].default == protocol.ARRAYS
    assert params["configrecord_key"].default == protocol.CONFIG
    assert params["weighted_by_key"].default == protocol.NUM_EXAMPLES


@pytest.mark.parametrize(
    ("value", "is_int", "is_number"),
    [(1, True, True), (True, False, False), (1.5, False, True), ("1", False, False),
     (None, False, False), (math.nan, False, True)],
)  # fmt: skip
def test_scalar_checks_never_take_a_bool_for_a_number(value, is_int, is_number):
    assert protocol.is_int(value) is is_int
    assert protocol.is_number(value) is is_number


def test_positive_and_finite_checks():
    assert protocol.is_positive_int(3) and not protocol.is_positive_int(0)
    assert not protocol.is_positive_int(True)
    assert protocol.is_finite_positive(0.1) and not protocol.is_finite_positive(math.inf)
    assert not protocol.is_finite_positive(0) and not protocol.is_finite_positive(False)
