"""Flag builders and run-config merging used by the deployment launcher."""

from __future__ import annotations

import pytest
from flwr.common.config import parse_config_args

from fedpeft.tools.deploy.flags import Tls, format_node_config, superlink_args, supernode_args


def test_node_config_round_trips_through_flwr_parsing():
    # Prepare
    config = {"partition-id": 1, "num-partitions": 4, "data-path": "/d x", "lr": 0.5, "on": True}
    # Execute
    parsed = parse_config_args([format_node_config(config)])
    # Assert
    assert parsed == config


def test_bad_node_config_values_are_named():
    # Execute / Assert
    with pytest.raises(ValueError, match="data-path"):
        format_node_config({"data-path": 'a"b'})
    with pytest.raises(ValueError, match="'a b'"):
        format_node_config({"a b": 1})


def test_auth_needs_tls():
    # Execute / Assert
    with pytest.raises(ValueError, match="needs TLS"):
        superlink_args(host="127.0.0.1", port=1, database=None, tls=None, auth=True)
    with pytest.raises(ValueError, match="needs TLS"):
        supernode_args(superlink="a:1", host="127.0.0.1", port=2, node_config={},
                       root_ca=None, auth_key="k")  # fmt: skip


def test_tls_superlink_flags():
    # Execute
    args = superlink_args(host="127.0.0.1", port=8000, database="s.db",
                          tls=Tls.in_dir("certs/"), auth=True)  # fmt: skip
    # Assert
    assert "--insecure" not in args
    assert args[args.index("--ssl-certfile") + 1] == "certs/server.pem"
    assert args[args.index("--database") + 1] == "s.db"
    assert args[-1] == "--enable-supernode-auth"
