"""Distillation temperature in the channel-pruning fine-tune, measured on trained networks.

    python benchmarks/distillation_temperature.py [--models mobilenetv2-narrow] [--out benchmarks/results.md]

For each model (trained on the digits, upscaled, by tests/trained_build.py), `compress --int8
--prune-channels-target-macs 0.5 --formats tflite` once per temperature (recipe
`distillation_temperature`, T = 1, 2, 4; distillation weight 0.5, default 3 epochs, the same
seed): the Keras top-1 of the pruned model before and after the fine-tune, after each epoch,
and of its int8 TFLite file, on the validation split (539 images: one image is 0.19 points).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from channels import compress, prepare_spec  # noqa: E402
from sections import run_per_model  # noqa: E402

# the narrow MobileNetV2 of the slow tier (tests/trained/test_trained_stages.py): the one that
# recovered least from channel pruning in 3 epochs (6.7 points under the original at T = 1)
TRAINED = {"mobilenetv2-narrow": ("tf_keras", "MobileNetV2", 48, 12), "resnet50": ("keras3", "ResNet50", 32, 4)}
TEMPERATURES = (1, 2, 4)
PRUNE = ["--prune-channels-target-macs", "0.5", "--formats", "tflite"]
RECORD_ANYWAY = ["--accuracy-tolerance", "100"]  # a run that loses more than 3 points is a result here, not a stop


def section(name: str, folder: Path) -> list[str]:
    model, train, val, trained_top1, train_s = prepare_spec(TRAINED[name], folder)
    rows = ["| T | top-1 before fine-tune | after each epoch | kept | int8 TFLite | Δ vs original (points) | wall s |",
            "|---|---|---|---|---|---|---|"]
    original = None
    for t in TEMPERATURES:
        recipe = folder / f"t{t}.yaml"
        recipe.write_text(f"distillation_temperature: {t}\n")
        run = compress(model, train, val, folder / f"t{t}", [*PRUNE, *RECORD_ANYWAY, "--recipe", str(recipe)])
        report, channels = run["report"], run["report"]["stages"]["channels"]
        original = report["reference"]["accuracy"]["top1"]
        finetune = channels["finetune"]
        (int8,) = [a for a in report["artifacts"] if a["precision"] == "int8"]
        kept = channels["keras_accuracy"]["top1"]
        epochs = " / ".join(f"{100 * v:.2f}" for v in finetune["val_top1_per_epoch"])
        rows.append(f"| {t} | {100 * channels['top1_before_finetune']:.2f}% | {epochs} | {100 * kept:.2f}% "
                    f"(epoch {finetune['kept_epoch']}) | {100 * int8['accuracy']['top1']:.2f}% | "
                    f"{100 * (kept - original):+.2f} | {run['seconds']:.0f} |")
    return [f"### {name}", "", f"Trained to {100 * trained_top1:.2f}% in {train_s:.0f} s (tests/trained_build.py "
            f"{' '.join(map(str, TRAINED[name]))}); original Keras top-1 on the validation split "
            f"{100 * original:.2f}%. `{' '.join(PRUNE)}`, distillation weight 0.5, 3 epochs.", "", *rows, ""]


def main() -> None:
    run_per_model(__doc__, "distillation_temperature.py", "Distillation temperature after channel pruning",
                  "mobilenetv2-narrow", section)


if __name__ == "__main__":
    main()
