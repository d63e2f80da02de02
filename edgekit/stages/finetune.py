"""The fine-tuning loop shared by pruning and QAT: seeded, with a progress bar per epoch."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgekit.data import Dataset
from edgekit.errors import DataError
from edgekit.keras_compat import tf_keras
from edgekit.progress import console


def require_labelled(data: Dataset | None, what: str) -> Dataset:
    if data is None or len(data) == 0:
        raise DataError(f"{what} fine-tunes the model and needs labelled training data: pass --data (image folder or .npz with x, y)")
    if data.y is None:
        raise DataError(f"{what} needs labels: --data {data.source} has no array `y`")
    return data


def outputs_probabilities(model) -> bool:
    """True when the model ends in softmax (then the loss must not apply it again)."""
    keras = tf_keras()
    last = model.layers[-1]
    return type(last).__name__ == "Softmax" or getattr(last, "activation", None) is keras.activations.softmax


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, -(-n // batch_size))


def finetune(model, data: Dataset, epochs: int, batch_size: int, learning_rate: float, seed: int,
             title: str, callbacks=(), from_logits: bool | None = None, quiet: bool = False) -> None:
    keras = tf_keras()
    keras.utils.set_random_seed(seed)
    if from_logits is None:
        from_logits = not outputs_probabilities(model)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits), metrics=["accuracy"])
    progress = [] if quiet else [_EpochBars(title, epochs, steps_per_epoch(len(data), batch_size))]
    model.fit(data.x, data.y, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0,
              callbacks=[*callbacks, *progress])


class _EpochBars(tf_keras().callbacks.Callback):
    """One rich progress bar per epoch, with the running loss and accuracy."""

    def __init__(self, title: str, epochs: int, steps: int):
        super().__init__()
        self.title, self.epochs, self.steps = title, epochs, steps
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[metrics]}"), TimeElapsedColumn(), console=console)

    def on_train_begin(self, logs=None):
        self.progress.start()

    def on_epoch_begin(self, epoch, logs=None):
        self.task = self.progress.add_task(f"{self.title} epoch {epoch + 1}/{self.epochs}", total=self.steps, metrics="")

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        self.progress.update(self.task, completed=batch + 1,
                             metrics=f"loss {logs.get('loss', 0):.3f} acc {logs.get('accuracy', 0):.3f}")

    def on_train_end(self, logs=None):
        self.progress.stop()
