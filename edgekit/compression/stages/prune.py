"""Magnitude pruning with tfmot, on the layers that carry most weights (Conv2D, Dense).

tfmot's PolynomialDecay only prunes every `frequency` steps (default 100) and only up to
`end_step`: on a short fine-tune the defaults leave the model unpruned. The schedule here is
derived from the steps actually run, so the final sparsity is reached with the last
RECOVERY_FRACTION of the steps left to recover at that sparsity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.compression.stages.finetune import FinetuneSettings, finetune, outputs_probabilities, require_labelled
from edgekit.compression.config import PruneStage
from edgekit.intake.data import Dataset
from edgekit.errors import require
from edgekit.support.keras_compat import tf_keras

PRUNED_KINDS = ("Conv2D", "Dense")  # depthwise kernels are tiny and fragile: left dense
RECOVERY_FRACTION = 0.4


@dataclass
class PruneResult:
    model: object  # the stripped tf_keras model, zeros in place
    per_layer: dict[str, float]
    overall: float
    schedule: dict


def schedule_for(total_steps: int, sparsity: float) -> dict:
    """begin 0, end with RECOVERY_FRACTION of the steps left, about 20 mask updates, end a multiple of frequency."""
    end = max(1, int(total_steps * (1 - RECOVERY_FRACTION)))
    frequency = max(1, end // 20)
    end = max(frequency, end - end % frequency)
    return {"initial_sparsity": 0.0, "final_sparsity": sparsity, "begin_step": 0, "end_step": end,
            "frequency": frequency}


def kernel_sparsity(model) -> tuple[dict[str, float], float]:
    """Fraction of zeros in each pruned-kind layer's kernel, and over all of them."""
    per_layer, zeros, total = {}, 0, 0
    for layer in model.layers:
        if type(layer).__name__ in PRUNED_KINDS:
            kernel = layer.get_weights()[0]
            per_layer[layer.name] = round(float(np.mean(kernel == 0)), 6)
            zeros += int(np.count_nonzero(kernel == 0))
            total += kernel.size
    return per_layer, round(zeros / total, 6) if total else 0.0


def prune(model, data: Dataset | None, stage: PruneStage, settings: FinetuneSettings, seed: int,
          targets=None, validation=None, quiet: bool = False) -> PruneResult:
    data = require_labelled(data, "--prune")
    tfmot = require("tensorflow_model_optimization", "compress")
    keras = tf_keras()
    params = schedule_for(settings.steps, 0.5 if stage.structure == "2:4" else stage.sparsity)
    kwargs = {"pruning_schedule": tfmot.sparsity.keras.PolynomialDecay(**params)}
    if stage.structure == "2:4":
        kwargs["sparsity_m_by_n"] = (2, 4)

    def wrap(layer):
        return tfmot.sparsity.keras.prune_low_magnitude(layer, **kwargs) if type(layer).__name__ in PRUNED_KINDS else layer

    keras.utils.set_random_seed(seed)
    wrapped = keras.models.clone_model(model, clone_function=wrap)
    # the loss follows the original model's output: the wrapper around a softmax Dense hides it
    finetune(wrapped, data, settings, seed, "prune", callbacks=[tfmot.sparsity.keras.UpdatePruningStep()],
             from_logits=not outputs_probabilities(model), targets=targets, validation=validation, quiet=quiet,
             keep_from_step=params["end_step"])  # an epoch before the final sparsity is no candidate
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
    per_layer, overall = kernel_sparsity(stripped)
    return PruneResult(stripped, per_layer, overall, params | {"structure": stage.structure})
