"""``fedpeft-sim``'s federation config and its GPU flag (nothing is started)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from flwr.common.config import parse_config_args
from flwr.supercore.utils import simulation_config_from_json

from fedpeft.tools import launch
from tests.conftest import ROOT

CONF = Path(__file__).resolve().parents[1] / "conf"
PAPER = sorted(CONF.glob("paper-*.toml"))


def _as_flower_reads_it(fed: str):
    """The SimulationConfig ``flwr run --federation-config fed`` sends (flwr/cli/run/run.py)."""
    parsed = {k.replace("-", "_"): v for k, v in parse_config_args([fed]).items()}
    return simulation_config_from_json(parsed)


def test_a_gpu_share_reaches_flowers_simulation_config():
    # Execute
    fed = launch.federation_config(64, 1.0, 0.25)
    # Assert: Flower parses it into the field Ray's client resources come from
    config = _as_flower_reads_it(fed)
    assert config.client_resources_num_gpus == pytest.approx(0.25)
    assert (config.num_supernodes, config.client_resources_num_cpus) == (64, 1)


def test_no_gpu_share_leaves_the_federation_config_as_before():
    # Execute
    fed = launch.federation_config(10, 1.0)
    # Assert
    assert fed == "num-supernodes=10 client-resources-num-cpus=1"
    assert not _as_flower_reads_it(fed).HasField("client_resources_num_gpus")


def _flower_pool_size(fed: str, monkeypatch, gpus: int) -> int:
    """Actors Flower's simulation starts for ``fed`` on one node of 64 CPUs and ``gpus`` GPUs.

    The config goes through the protobuf message the SuperLink receives, then through
    Flower's own reading of it and its own actor-pool sizing.
    """
    from flwr.proto.federation_config_pb2 import SimulationConfig
    from flwr.simulation import app as sim_app
    from flwr.simulation.ray_transport import ray_actor

    sent = SimulationConfig.FromString(_as_flower_reads_it(fed).SerializeToString())
    _, _, backend, _, _ = sim_app._run_simulation_settings(sent)
    nodes = [{"Resources": {"CPU": 64.0, "GPU": float(gpus)}}]
    monkeypatch.setattr(ray_actor.ray, "nodes", lambda: nodes)
    return ray_actor.pool_size_from_resources(backend["client_resources"])


@pytest.mark.parametrize(
    ("share", "per_gpu"), [(0.1, 10), (0.2, 5), (0.25, 4), (1 / 3, 3), (0.5, 2), (1.0, 1)]
)
@pytest.mark.parametrize("gpus", [1, 2])
def test_flower_runs_the_intended_clients_per_gpu(monkeypatch, share, per_gpu, gpus):
    # Execute (the plain decimal's baseline: the test below)
    fed = launch.federation_config(64, 1, share)
    # Assert: Flower's own computation gives 1/share clients per GPU
    assert _flower_pool_size(fed, monkeypatch, gpus) == per_gpu * gpus


def test_the_plain_decimal_loses_a_client_per_gpu_in_flower(monkeypatch):
    # The reason for flower_gpu_fraction: 0.2 as a 32-bit float is 0.20000000298
    fed = "num-supernodes=64 client-resources-num-cpus=1 client-resources-num-gpus=0.2"
    assert _flower_pool_size(fed, monkeypatch, 1) == 4


@pytest.mark.parametrize("bad", [0.5, 0, True])
def test_a_fractional_cpu_share_is_refused_naming_it(bad):
    with pytest.raises(ValueError, match=f"cpus_per_client={bad!r}"):
        launch.federation_config(10, bad)


@pytest.mark.parametrize("bad", [-0.5, float("nan"), float("inf")])
def test_a_bad_gpu_share_is_refused_naming_it(bad):
    # Execute / Assert
    with pytest.raises(ValueError, match=f"gpus_per_client={bad!r}"):
        launch.federation_config(10, 1.0, bad)


@pytest.mark.parametrize(
    ("flag", "bad"),
    [
        ("--gpus-per-client", "-1"),
        ("--gpus-per-client", "x"),
        ("--gpus-per-client", "nan"),
        ("--cpus-per-client", "0"),
        ("--cpus-per-client", "-2"),
        ("--cpus-per-client", "inf"),
        ("--cpus-per-client", "0.5"),
    ],
)
def test_fedpeft_sim_refuses_a_bad_resource_share_before_starting_anything(flag, bad, capsys):
    # Execute
    with pytest.raises(SystemExit) as exit_info:
        launch.main([flag, bad, "--netns", "never"])
    # Assert: argparse's usage error, naming the flag and the value
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and repr(bad) in err


def test_fedpeft_sim_passes_its_gpu_share_to_the_run(monkeypatch, tmp_path):
    # Prepare: the simulation itself is replaced; only the arguments it gets are kept
    seen = {}

    def fake_run_simulation(*args, **kwargs):
        seen["args"] = args
        return 1, "finished:completed"

    monkeypatch.setattr(launch, "run_simulation", fake_run_simulation)
    monkeypatch.setattr(launch.signal, "signal", lambda *_: None)  # keep pytest's SIGTERM
    # Execute
    code = launch.main(["--app", str(ROOT), "--gpus-per-client", "0.25", "--netns", "never"])
    # Assert
    assert code == 0
    assert seen["args"][-1] == 0.25


@pytest.mark.parametrize(
    ("flags", "warned"),
    [
        ([], True),
        (["-c", "train.device='cpu'", "--gpus-per-client", "0.5"], True),
        (["--gpus-per-client", "0.5"], False),
    ],
)
def test_fedpeft_sim_warns_at_start_up_of_bf16_the_cpu_emulates(monkeypatch, caplog, flags,
                                                                 warned):  # fmt: skip
    # Prepare: a CPU without native bf16, whatever this machine's is; no run starts
    from fedpeft import precision

    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    monkeypatch.setattr(precision, "_warned", set())
    monkeypatch.setattr(launch, "run_simulation", lambda *a, **k: (1, "finished:completed"))
    monkeypatch.setattr(launch.signal, "signal", lambda *_: None)  # keep pytest's SIGTERM
    # Execute
    with caplog.at_level("WARNING"):
        code = launch.main(["--app", str(ROOT), "--netns", "never",
                            "-c", "train.precision='bf16'", *flags])  # fmt: skip
    # Assert: named by key, unless the clients compute on a GPU
    assert code == 0
    assert ("train.precision='bf16' on a CPU without native bf16" in caplog.text) == warned


def test_fedpeft_sim_refuses_a_bad_run_config_before_starting_anything(monkeypatch, caplog):
    # Prepare: starting the simulation would fail the test
    monkeypatch.setattr(launch, "run_simulation", lambda *a: pytest.fail("started a run"))
    monkeypatch.setattr(launch.signal, "signal", lambda *_: None)  # keep pytest's SIGTERM
    # Execute
    code = launch.main(["--app", str(ROOT), "--netns", "never", "-c", "train.batch-size=0"])
    # Assert: the error names the key and its value
    assert code == 2
    assert "train.batch-size=0" in caplog.text


def _commands(preset: Path) -> list[list[str]]:
    """The shell commands in a preset's header comment (``\\`` continues a line)."""
    lines = [line[1:].strip() for line in preset.read_text().splitlines() if line.startswith("#")]
    text = "\n".join(lines).replace("\\\n", " ")
    return [
        shlex.split(line) for line in text.splitlines() if line.startswith(("fedpeft-sim", "flwr"))
    ]


@pytest.mark.parametrize("preset", PAPER, ids=[p.stem for p in PAPER])
def test_paper_presets_say_how_to_run_them_on_a_quarter_gpu_each(preset):
    # Prepare
    sim, flwr = _commands(preset)
    # Execute: fedpeft-sim's own parser reads the first command
    args = launch.build_parser().parse_args(sim[1:])
    # Assert: 64 clients, 4 per GPU, this preset; plain Flower gets the same federation
    assert (args.num_supernodes, args.gpus_per_client) == (64, 0.25)
    assert args.run_config == [f"conf/{preset.name}"]
    assert flwr[:2] == ["flwr", "run"] and flwr[flwr.index("--run-config") + 1] == sim[-1]
    fed = flwr[flwr.index("--federation-config") + 1]
    assert fed == launch.federation_config(64, args.cpus_per_client, args.gpus_per_client)
