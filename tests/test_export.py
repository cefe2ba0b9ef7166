"""Exporting a run's model, loading it back without the run, and the run's class names."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import timm
import torch
from runs import CLASS_NAMES, make_run, save_trainable, tiny_config, trained_model
from safetensors import safe_open

from fedpeft.config import ConfigError, config_from_record
from fedpeft.data.tensors import ImageTensors
from fedpeft.record import RunRecord, read_run
from fedpeft.tools.export import load, read_info
from fedpeft.tools.export.cli import main as export_main
from fedpeft.tools.export.writer import export_run, global_model
from peft_strategies import method_names

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["head", "bias", "full", "adapter", "prompt", "lora"]


def _batch() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


# -- export -> load --------------------------------------------------------------------


def test_every_registered_method_is_covered():
    assert sorted(METHODS) == sorted(method_names())


@pytest.mark.parametrize("method", METHODS)
def test_the_loaded_model_gives_the_global_models_logits(tmp_path, method):
    # Prepare: a run whose global tensors are far from their initial values
    overrides = {"peft.adapter.shared": False} if method == "adapter" else {}
    reference = make_run(tmp_path / "run", method, **overrides)
    with torch.no_grad():
        expected = reference(_batch())
    # Execute
    export_run(tmp_path / "run", tmp_path / "model")
    loaded = load(tmp_path / "model")
    with torch.no_grad():
        got = loaded(_batch())
    # Assert
    assert not loaded.training
    assert (got - expected).abs().max().item() <= 1e-4


def test_a_shared_adapter_is_stored_once_and_loads_shared(tmp_path):
    # Prepare
    reference = make_run(tmp_path / "run", "adapter", **{"peft.adapter.shared": True})
    # Execute
    export_run(tmp_path / "run", tmp_path / "model")
    loaded = load(tmp_path / "model")
    # Assert
    with safe_open(str(tmp_path / "model" / "model.safetensors"), "pt") as f:
        stored = [k for k in f.keys() if ".adapter.down.weight" in k]
    assert len(stored) == 1
    assert loaded.blocks[0].mlp.adapter is loaded.blocks[-1].mlp.adapter
    with torch.no_grad():
        assert (loaded(_batch()) - reference(_batch())).abs().max().item() <= 1e-4


def test_merged_lora_is_the_plain_backbone(tmp_path):
    # Prepare
    run = make_run(tmp_path / "run", "lora")
    plain = timm.create_model("test_vit", pretrained=False, num_classes=3, img_size=32)
    frozen = run.blocks[0].attn.qkv.base_layer.weight.detach().clone()
    # Execute
    export_run(tmp_path / "run", tmp_path / "model")
    loaded = load(tmp_path / "model")
    # Assert: LoRA's update is in the qkv weights, and nothing of LoRA is left
    assert (loaded.blocks[0].attn.qkv.weight - frozen).abs().max().item() > 1e-3
    names = [n for n, _ in loaded.named_parameters()]
    assert not [n for n in names if "lora_" in n]
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in plain.parameters())
    assert names == [n for n, _ in plain.named_parameters()]


def test_the_model_description_says_what_was_exported(tmp_path):
    # Prepare
    make_run(tmp_path / "run", "prompt", **{"peft.prompt.num-tokens": 3})
    plain = timm.create_model("test_vit", pretrained=False, num_classes=3, img_size=32)
    data_cfg = timm.data.resolve_data_config({}, model=plain)
    # Execute
    export_run(tmp_path / "run", tmp_path / "model")
    info = read_info(tmp_path / "model")
    raw = json.loads((tmp_path / "model" / "fedpeft_model.json").read_text())
    # Assert
    assert (info.timm_name, info.img_size, info.num_classes) == ("test_vit", 32, 3)
    assert info.mean == list(data_cfg["mean"]) and info.std == list(data_cfg["std"])
    assert info.class_names == CLASS_NAMES
    assert info.method == "prompt" and info.method_params["num_tokens"] == 3
    assert (info.round_choice, info.round, info.accuracy) == ("final", 2, 0.60)
    assert raw["round"] == 2 and raw["run_id"] == 5


# -- --round ---------------------------------------------------------------------------


@pytest.fixture
def rounds_run(tmp_path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A run folder with final, best and round_1 files, each with its own head."""
    run = tmp_path / "run"
    make_run(run, "head")
    heads = {}
    cfg = tiny_config("head")
    for choice, name, seed in (("best", "best_trainable", 2), ("1", "round_1_trainable", 3)):
        model = trained_model(cfg, len(CLASS_NAMES), seed)
        save_trainable(model, run / f"{name}.safetensors")
        heads[choice] = model.head.weight.detach().clone()
    heads["final"] = global_model(run, "final").model.head.weight.detach().clone()
    return run, heads


@pytest.mark.parametrize(("choice", "key", "server_round"),
                         [("best", "best", 1), ("final", "final", 2), (1, "1", 1)])  # fmt: skip
def test_each_round_choice_reads_its_file(rounds_run, tmp_path, choice, key, server_round):
    # Prepare
    run, heads = rounds_run
    # Execute
    info = export_run(run, tmp_path / f"model-{key}", choice)
    loaded = load(tmp_path / f"model-{key}")
    # Assert
    assert torch.equal(loaded.head.weight, heads[key])
    assert info.round == server_round
    assert Path(info.source).name == ("round_1" if key == "1" else key) + "_trainable.safetensors"


def test_a_missing_round_names_the_file_and_lists_what_exists(rounds_run, tmp_path):
    # Prepare
    run, _ = rounds_run
    # Execute
    with pytest.raises(FileNotFoundError) as err:
        export_run(run, tmp_path / "model", 7)
    # Assert
    message = str(err.value)
    assert str(run / "round_7_trainable.safetensors") in message
    assert "best (best_trainable.safetensors)" in message
    assert "final (final_trainable.safetensors)" in message
    assert "1 (round_1_trainable.safetensors)" in message


def test_the_cli_exports_and_reports_a_missing_file(tmp_path, caplog):
    # Prepare
    make_run(tmp_path / "run", "head")
    # Execute
    ok = export_main([str(tmp_path / "run"), "--out", str(tmp_path / "model")])
    with caplog.at_level(logging.ERROR):
        missing = export_main([str(tmp_path / "run"), "--out", str(tmp_path / "m2"),
                               "--round", "best"])  # fmt: skip
    with pytest.raises(SystemExit):
        export_main([str(tmp_path / "run"), "--out", str(tmp_path / "m3"), "--round", "last"])
    # Assert
    assert ok == 0 and (tmp_path / "model" / "model.safetensors").is_file()
    assert missing == 2
    assert "best_trainable.safetensors does not exist" in caplog.text


def test_a_head_that_does_not_fit_the_class_names_is_refused(tmp_path):
    # Prepare: the record names 2 classes, the tensors hold a head of 3
    make_run(tmp_path / "run", "head")
    metrics = tmp_path / "run" / "metrics.json"
    data = json.loads(metrics.read_text())
    metrics.write_text(json.dumps({**data, "class_names": ["a", "b"]}))
    # Execute / Assert
    with pytest.raises(ValueError, match=r"head of 3 classes, but metrics\.json names 2"):
        export_run(tmp_path / "run", tmp_path / "model")


def test_a_run_without_class_names_exports_class_ids(tmp_path):
    # Prepare: metrics.json written before runs recorded class names
    make_run(tmp_path / "run", "head", class_names=[])
    # Execute
    info = export_run(tmp_path / "run", tmp_path / "model")
    # Assert
    assert info.class_names == ["0", "1", "2"]


# -- the recorded config and class names -----------------------------------------------


def _subset(full: dict, recorded: dict) -> dict:
    """``full`` restricted to the keys ``recorded`` has (nested)."""
    return {k: _subset(full[k], v) if isinstance(v, dict) else full[k]
            for k, v in recorded.items()}  # fmt: skip


def test_every_committed_run_config_is_rebuilt_as_recorded():
    # Prepare
    paths = sorted((ROOT / "docs" / "results").glob("*/metrics.json"))
    # Execute
    pairs = [(read_run(p).config, p) for p in paths]
    rebuilt = [(json.loads(json.dumps(dataclasses.asdict(config_from_record(c)))), c, p)
               for c, p in pairs]  # fmt: skip
    # Assert
    assert paths
    for full, recorded, path in rebuilt:
        assert _subset(full, recorded) == recorded, path


def test_a_recorded_key_the_schema_does_not_know_is_refused():
    # Prepare
    config = dataclasses.asdict(tiny_config("lora"))
    config["train"]["warp_speed"] = 9
    # Execute / Assert
    with pytest.raises(ConfigError, match=r"train\.warp-speed"):
        config_from_record(config)


def test_class_names_are_recorded_and_old_records_read_without_them(tmp_path):
    # Prepare
    (tmp_path / "new.json").write_text(json.dumps(RunRecord(class_names=["a", "b"]).to_dict()))
    (tmp_path / "old.json").write_text(json.dumps({"run_id": 1, "status": "completed"}))
    # Execute
    new, old = read_run(tmp_path / "new.json"), read_run(tmp_path / "old.json")
    # Assert
    assert new.class_names == ["a", "b"] and old.class_names == []


def test_class_names_come_from_the_label_feature_else_class_ids():
    # Prepare
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    from fedpeft.data.federated import _class_names

    labelled = Features({"label": ClassLabel(names=["cat", "dog"])})
    plain = Features({"label": Value("int64")})
    named = DatasetDict({s: Dataset.from_dict({"label": [0, 1]}, features=labelled)
                         for s in ("train", "test")})  # fmt: skip
    unnamed = DatasetDict({s: Dataset.from_dict({"label": [0, 1]}, features=plain)
                           for s in ("train", "test")})  # fmt: skip
    images = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    # Execute
    names, none = _class_names(named, 2), _class_names(unnamed, 2)
    fallback = ImageTensors(images, torch.tensor([0, 1]), 3).names()
    # Assert
    assert names == ["cat", "dog"] and none == []
    assert fallback == ["0", "1", "2"]


def test_the_best_round_recorded_in_metrics_is_the_one_exported(rounds_run, tmp_path):
    # Prepare: a run that recorded its best round (round 0 here, unlike its accuracies)
    run, _ = rounds_run
    data = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**data, "best_round": 0}))
    # Execute
    info = export_run(run, tmp_path / "model", "best")
    # Assert
    assert (info.round, info.accuracy) == (0, 0.30)
