"""What a local deployment starts: app, work dir, SuperNodes and their node-configs, security.

SuperNodes started on one host divide its CPUs among themselves (``cpu_split``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...protocol import NUM_PARTITIONS, PARTITION_ID


@dataclass
class FederationSpec:
    """What to start: the app, where its state lives, TLS and authentication."""

    app: Path
    workdir: Path
    num_supernodes: int = 2
    node_configs: list[dict[str, object]] = field(default_factory=list)
    tls: bool = True
    auth: bool = True
    cert_dir: Path | None = None
    database: Path | None = None
    env: dict[str, str] = field(default_factory=dict)  # extra environment for every process
    cpu_split: bool = True  # SuperNode i: its share of the host's CPUs (fedpeft.tools.deploy.cpus)

    def __post_init__(self) -> None:
        if self.num_supernodes < 1:
            raise ValueError(f"num_supernodes={self.num_supernodes}: must be >= 1")
        if self.auth and not self.tls:
            raise ValueError("SuperNode authentication needs TLS: drop --insecure or add --no-auth")
        if len(self.node_configs) > self.num_supernodes:
            raise ValueError(
                f"{len(self.node_configs)} node configs for {self.num_supernodes} SuperNodes"
            )

    def node_config(self, index: int) -> dict[str, object]:
        """SuperNode ``index``'s node-config; by default partition ``index`` of N."""
        if index < len(self.node_configs):
            return self.node_configs[index]
        return {PARTITION_ID: index, NUM_PARTITIONS: self.num_supernodes}
