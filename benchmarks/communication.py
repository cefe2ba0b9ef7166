"""Per-method trainable parameters and bytes per client per round (run by hand).

    .venv/bin/python -m benchmarks.communication

For each PEFT method: trainable parameters, theoretical bytes (numel × 4),
the serialised bytes Flower moves for the ArrayRecord (``wire_bytes``), and
the fraction of full fine-tuning. Counts need no pretrained weights, so the
ViT-B/16 rows use random initialisation; values are random so that no two
arrays deduplicate. A second table per model gives the bytes of one reply in each
``comm.uplink`` codec (:func:`fedpeft.wire.encode` of a random update, as the
ClientApp sends it) against the same reply in fp32 and against full fine-tuning's.
"""

from __future__ import annotations

import torch

from fedpeft import wire
from fedpeft.arrays import theoretical_bytes, to_arrayrecord, to_numpy, trainable_state, wire_bytes
from fedpeft.backbones import create_backbone
from fedpeft.codecs import CODECS, CodecParams
from fedpeft.config import ModelConfig
from peft_strategies import get_method, method_names

ORDER = ["full", "head", "bias", "adapter", "prompt", "lora"]
# (label, codec, params): the codecs of comm.uplink as a run would configure them
CODEC_ROWS = (
    ("fp16", "fp16", CodecParams()),
    ("bf16", "bf16", CodecParams()),
    ("int8 (per tensor)", "int8", CodecParams()),
    ("int8 (blocks of 256)", "int8", CodecParams(int8_block=256)),
    ("topk 10%", "topk", CodecParams(topk_fraction=0.1)),
    ("topk 1%", "topk", CodecParams(topk_fraction=0.01)),
)

SETTINGS = (
    ("ViT-B/16, 224 px, 100 classes", ModelConfig("vit_base_patch16_224", "random", 224), 100),
    ("ViT-S/14 (default job), 56 px, 10 classes",
     ModelConfig("vit_small_patch14_dinov2", "random", 56), 10),
)  # fmt: skip


def rows(mcfg: ModelConfig, num_classes: int) -> list[tuple[str, int, int, int, dict]]:
    """(method, params, theoretical bytes, wire bytes, {codec label: wire bytes})."""
    out = []
    for name in method_names():
        method = get_method(name)
        torch.manual_seed(0)
        model = create_backbone(mcfg, num_classes)
        method.apply(model, method.config_cls())
        state = {k: torch.randn_like(v) for k, v in trainable_state(model).items()}
        record = to_arrayrecord(state)
        n = sum(v.numel() for v in state.values())
        update = to_numpy(state)
        encoded = {label: wire_bytes(wire.encode(update, CODECS[codec](params)))
                   for label, codec, params in CODEC_ROWS}  # fmt: skip
        out.append((name, n, theoretical_bytes(record), wire_bytes(record), encoded))
        del model, record, state, update
    return out


def main() -> None:
    for title, mcfg, classes in SETTINGS:
        table = sorted(rows(mcfg, classes), key=lambda r: ORDER.index(r[0]))
        full = next(r for r in table if r[0] == "full")
        print(f"\n### {title}\n")
        print("| method | trainable params | theoretical bytes | measured bytes (wire) "
              "| wire − theory | of full |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|")
        for name, n, theory, fp32, _ in table:
            print(f"| {name} | {n:,} | {theory:,} | {fp32:,} | {fp32 - theory:,} "
                  f"| {100 * fp32 / full[3]:.3f}% |")  # fmt: skip
        print(
            f"\nOne reply per codec ({title}): wire bytes, × the same reply in fp32, "
            "% of full fine-tuning's fp32 reply\n"
        )
        print("| method | " + " | ".join(label for label, _, _ in CODEC_ROWS) + " |")
        print("|---|" + "---:|" * len(CODEC_ROWS))
        for name, _, _, fp32, encoded in table:
            cells = [f"{b:,} ({b / fp32:.3f}×, {100 * b / full[3]:.3f}%)" for b in encoded.values()]
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
