"""Per-method trainable parameters and bytes per client per round (run by hand).

    .venv/bin/python -m benchmarks.communication > docs/communication.md

For each PEFT method: trainable parameters, theoretical bytes (numel × 4),
the serialised bytes Flower moves for the ArrayRecord (``wire_bytes``), and
the fraction of full fine-tuning. Counts need no pretrained weights, so the
ViT-B/16 rows use random initialisation; values are random so that no two
arrays deduplicate.
"""

from __future__ import annotations

import torch

from fedpeft.arrays import theoretical_bytes, to_arrayrecord, trainable_state, wire_bytes
from fedpeft.backbones import create_backbone
from fedpeft.config import ModelConfig
from peft_strategies import get_method, method_names

SETTINGS = (
    ("ViT-B/16, 224 px, 100 classes", ModelConfig("vit_base_patch16_224", "random", 224), 100),
    ("ViT-S/14 (default job), 112 px, 10 classes",
     ModelConfig("vit_small_patch14_dinov2", "random", 112), 10),
)  # fmt: skip


def rows(mcfg: ModelConfig, num_classes: int) -> list[tuple[str, int, int, int]]:
    out = []
    for name in method_names():
        method = get_method(name)
        torch.manual_seed(0)
        model = create_backbone(mcfg, num_classes)
        method.apply(model, method.config_cls())
        state = {k: torch.randn_like(v) for k, v in trainable_state(model).items()}
        record = to_arrayrecord(state)
        n = sum(v.numel() for v in state.values())
        out.append((name, n, theoretical_bytes(record), wire_bytes(record)))
        del model, record, state
    return out


def main() -> None:
    for title, mcfg, classes in SETTINGS:
        table = rows(mcfg, classes)
        full = next(r for r in table if r[0] == "full")
        print(f"\n### {title}\n")
        print("| method | trainable params | theoretical bytes | measured bytes (wire) "
              "| wire − theory | of full |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|")
        order = ["full", "head", "bias", "adapter", "prompt", "lora"]
        for name, n, theory, wire in sorted(table, key=lambda r: order.index(r[0])):
            print(f"| {name} | {n:,} | {theory:,} | {wire:,} | {wire - theory:,} "
                  f"| {100 * wire / full[3]:.3f}% |")  # fmt: skip


if __name__ == "__main__":
    main()
