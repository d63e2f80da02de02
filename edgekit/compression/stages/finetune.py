"""The fine-tuning loop shared by pruning and QAT, set up to keep a converged network converged.

What a trained network needs from a short fine-tune (issue 22: a trained MobileNetV2 went from
89% to 12% under the old loop while its training accuracy looked fine):
- BatchNormalization frozen: in inference mode, on its moving statistics. In training mode it
  normalizes with each small batch's statistics while its moving averages (momentum 0.99–0.999)
  barely follow the changed weights, so the model the files are made from is not the one that
  trained. Frozen, the weights learn against the statistics the exported model uses (Keras'
  fine-tuning guide; tfmot's QAT folds BatchNorm with its moving statistics too).
- A learning rate with a warm-up, then cosine decay to zero: Adam's first steps on a converged
  model are its largest, and the warm-up keeps them small; a run that diverges anyway restarts
  lower.
- Optional distillation from the original model: the targets are a mix of the labels and the
  original model's own probabilities, which carry more than a label on a small data set. At a
  temperature T above 1 (recipe distillation_temperature) both models' probabilities are
  softened first (Hinton et al.: softmax(logits / T)), so that the small probabilities of the
  wrong classes weigh in, and that term is T²·KL (its gradients keep their scale as T grows).
- The best epoch kept: with validation data, the weights of the epoch with the highest
  validation top-1 (among those a stage allows: pruning only once the final sparsity is reached)
  are what the stage returns, not the last epoch's. On a small data set a trained network can
  lose in its last epoch what it had: EfficientNetB0 pruned for 3 epochs ended 18 points under
  the original where 2 epochs were 3 points under (issue 22's slow tier).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgekit.intake.data import Dataset
from edgekit.errors import DataError
from edgekit.support.keras_compat import tensorflow, tf_keras
from edgekit.support.progress import console

# The rate starts at what the file's Adam-family optimizer recorded, because a small network needs
# it to recover from pruning (trained MobileNetV2 0.35, 50% pruning, 2 epochs: 1e-3 kept 89.6% of
# 89.2%, 3e-4 77.2%, 1e-4 49.5%); a network it is too high for diverges and backs off (below).
# Without a recorded rate or --learning-rate: DEFAULT_LEARNING_RATE.
DEFAULT_LEARNING_RATE = 3e-4
RECORDED_LR_FRACTION = 1.0  # of the learning rate the file's Adam-family optimizer recorded
LR_BOUNDS = (1e-5, 1e-3)
WARMUP_FRACTION = 0.1


@dataclass
class FinetuneSettings:
    """How a stage fine-tunes: what report.json records under stages.<name>.finetune."""

    learning_rate: float
    learning_rate_source: str
    epochs: int
    batch_size: int
    steps: int
    warmup_steps: int
    distillation: float  # weight of the original model's probabilities in the targets (0: labels only)
    temperature: float = 1.0  # distillation temperature: 1 mixes the targets, above 1 softens both sides
    batchnorm: str = "frozen (inference mode, moving statistics)"
    val_top1_per_epoch: list[float] = field(default_factory=list)
    backoffs: list[dict] = field(default_factory=list)  # restarts at a lower rate after divergence
    kept_epoch: int | None = None  # the epoch whose weights the stage kept (1-based; None: no validation data)

    def to_json(self) -> dict:
        return asdict(self)


def resolve_learning_rate(given: float | None, recorded: float | None) -> tuple[float, str]:
    """--learning-rate when given; else a fraction of the rate the file's optimizer recorded; else the default."""
    if given is not None:
        return given, "given (--learning-rate or the recipe)"
    if recorded:
        low, high = LR_BOUNDS
        rate = float(min(max(recorded * RECORDED_LR_FRACTION, low), high))
        return rate, f"{RECORDED_LR_FRACTION:g} × the optimizer's recorded {recorded:g}, within {low:g}–{high:g}"
    return DEFAULT_LEARNING_RATE, "default (the file records no optimizer)"


def settings_for(n: int, epochs: int, batch_size: int, learning_rate: float | None, recorded_lr: float | None,
                 distillation: float, temperature: float = 1.0) -> FinetuneSettings:
    rate, source = resolve_learning_rate(learning_rate, recorded_lr)
    steps = steps_per_epoch(n, batch_size) * epochs
    return FinetuneSettings(rate, source, epochs, batch_size, steps, int(steps * WARMUP_FRACTION), distillation,
                            temperature)


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


@contextmanager
def batchnorm_frozen(model):
    """Every trainable BatchNormalization in the model (also inside tfmot's wrappers) in inference
    mode while the block runs: a non-trainable tf_keras BatchNormalization normalizes with its
    moving statistics and keeps them. Afterwards they are trainable again, as the next stage
    expects (tfmot's registries judge a layer by whether it has trainable weights)."""
    frozen = []
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)  # PruneLowMagnitude / QuantizeWrapper hold the real layer
        if type(inner).__name__ in ("BatchNormalization", "SyncBatchNormalization") and inner.trainable:
            inner.trainable = False
            frozen.append(inner)
    try:
        yield frozen
    finally:
        for layer in frozen:
            layer.trainable = True


def teacher_targets(teacher, data: Dataset, num_classes: int, weight: float, from_logits: bool,
                    batch_size: int = 64, temperature: float = 1.0) -> np.ndarray | None:
    """Soft targets. Temperature 1: (1 - weight) × one-hot labels + weight × the original model's
    probabilities, and cross-entropy on them is the label loss plus `weight` × distillation.
    Above 1: [one-hot labels | the original's probabilities softened by T], side by side, for
    distillation_loss."""
    if weight <= 0:
        return None
    outputs = np.concatenate([np.asarray(teacher(data.x[i:i + batch_size], training=False))
                              for i in range(0, len(data), batch_size)]).astype(np.float64)
    one_hot = np.eye(num_classes, dtype=np.float32)[np.asarray(data.y, dtype=np.int64)]
    if from_logits or temperature != 1:
        logits = outputs if from_logits else np.log(np.clip(outputs, PROBABILITY_FLOOR, 1.0))
        outputs = np.exp((logits - logits.max(axis=1, keepdims=True)) / temperature)
        outputs /= outputs.sum(axis=1, keepdims=True)
    if temperature != 1:
        return np.concatenate([one_hot, outputs.astype(np.float32)], axis=1)
    return ((1 - weight) * one_hot + weight * outputs).astype(np.float32)


PROBABILITY_FLOOR = 1e-7  # as Keras clips probabilities before their log


def distillation_loss(num_classes: int, weight: float, temperature: float, from_logits: bool):
    """Per sample: (1 - weight) × cross-entropy with the label + weight × T² × KL(the original's
    softened probabilities ‖ the model's, softened by the same T); targets from teacher_targets."""
    tf = tensorflow()

    def loss(targets, outputs):
        labels, soft = targets[:, :num_classes], targets[:, num_classes:]
        log_p = tf.nn.log_softmax(outputs) if from_logits else tf.math.log(
            tf.clip_by_value(outputs, PROBABILITY_FLOOR, 1.0))
        hard = -tf.reduce_sum(labels * log_p, axis=-1)
        log_q = tf.nn.log_softmax(log_p / temperature)
        kl = tf.reduce_sum(soft * (tf.math.log(tf.clip_by_value(soft, 1e-12, 1.0)) - log_q), axis=-1)
        return (1 - weight) * hard + weight * temperature ** 2 * kl
    return loss


def class_count(targets: np.ndarray, settings: FinetuneSettings) -> int:
    """Above temperature 1 the targets are labels and softened probabilities side by side."""
    return targets.shape[1] // 2 if settings.temperature != 1 else targets.shape[1]


def training_loss(model, data: Dataset, settings: FinetuneSettings, from_logits: bool, targets=None,
                  n: int = 512) -> float:
    """The loss the fine-tune minimizes, on up to n training inputs, before it starts."""
    outputs = np.concatenate([np.asarray(model(data.x[i:i + 128], training=False))
                              for i in range(0, min(n, len(data)), 128)])
    if targets is not None and settings.temperature != 1:
        loss = distillation_loss(class_count(targets, settings), settings.distillation, settings.temperature,
                                 from_logits)
        return float(np.mean(loss(targets[:len(outputs)], outputs)))
    probabilities = outputs
    if from_logits:
        probabilities = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        probabilities /= probabilities.sum(axis=1, keepdims=True)
    y = np.asarray(data.y[:len(outputs)], dtype=np.int64)  # the labels' loss, as before temperatures
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(y)), y], PROBABILITY_FLOOR, 1.0))))


# A fine-tune whose training loss climbs above chance level (ln of the class count: worse than
# guessing) has diverged: its learning rate is too high for this network (trained ResNet50 at
# 1e-3 with frozen BatchNorm fell to 9% top-1 where MobileNetV2 0.35 needs 1e-3 to recover from
# pruning). It restarts from the same weights at a lower rate, half a decade down (1e-3, 3.2e-4,
# 1e-4), at most MAX_BACKOFFS times. The last attempt is not stopped: with no lower rate left to
# try, stopping would only return the diverged weights, where the rest of the cosine decay may
# still recover them (trained ResNet50, 50% pruning at 1e-4: 67.9% after epoch 1, 18.7% after
# epoch 2, then stopped by the guard in epoch 3 and returned as it was).
BACKOFF = 10 ** 0.5
MAX_BACKOFFS = 2


def finetune(model, data: Dataset, settings: FinetuneSettings, seed: int, title: str, callbacks=(),
             from_logits: bool | None = None, targets: np.ndarray | None = None, validation=None,
             quiet: bool = False, keep_from_step: int = 0, start_loss: float | None = None) -> None:
    """Fit `model` as `settings` say. `targets`: soft targets (else the labels); `validation`:
    (x, y) measured after every epoch into settings.val_top1_per_epoch, and the best epoch ending
    after step `keep_from_step` is the one kept. A diverging run is restarted at a lower
    rate (settings.backoffs records each). `start_loss`: the model's loss before the fine-tune,
    where it may start above chance level (channels removed): the run diverges only above
    1.5× that."""
    if from_logits is None:
        from_logits = not outputs_probabilities(model)
    with batchnorm_frozen(model):
        _fit_with_backoff(model, data, settings, seed, title, callbacks, from_logits, targets, validation, quiet,
                          keep_from_step, start_loss)


def _fit_with_backoff(model, data: Dataset, settings: FinetuneSettings, seed: int, title: str, callbacks,
                      from_logits: bool, targets, validation, quiet: bool, keep_from_step: int,
                      start_loss: float | None) -> None:
    start = model.get_weights()  # every variable: kernels, pruning masks and step, quantizer ranges
    chance = float(np.log(max(2, class_count(targets, settings) if targets is not None else int(np.max(data.y)) + 1)))
    chance = max(chance, 1.5 * start_loss) if start_loss else chance
    for attempt in range(MAX_BACKOFFS + 1):
        if attempt:
            model.set_weights(start)
            settings.backoffs.append({"from": settings.learning_rate, "to": settings.learning_rate / BACKOFF,
                                      "why": f"training loss rose above chance level ({chance:.2f})"})
            settings.learning_rate /= BACKOFF
            settings.val_top1_per_epoch.clear()
            if not quiet:
                console.print(f"! {title}: the fine-tune diverged (training loss above chance level); restarting "
                              f"from the same weights at learning rate {settings.learning_rate:.2g}", highlight=False)
        guard = _Divergence(chance, settings.warmup_steps, stop=attempt < MAX_BACKOFFS)
        keeper = BestEpoch(settings.val_top1_per_epoch, keep_from_step)
        _fit(model, data, settings, seed, title, [*callbacks, guard], from_logits, targets, validation, quiet,
             keeper if validation is not None else None)
        if not guard.diverged or attempt == MAX_BACKOFFS:
            if guard.diverged and not quiet:
                console.print(f"! {title}: the fine-tune diverged again at learning rate {settings.learning_rate:.2g}, "
                              "the lowest it tries; it trained to the end of its schedule instead of stopping",
                              highlight=False)
            settings.kept_epoch = keeper.restore()
            if settings.kept_epoch not in (None, len(settings.val_top1_per_epoch)) and not quiet:
                console.print(f"  {title}: kept epoch {settings.kept_epoch} of {len(settings.val_top1_per_epoch)} "
                              f"(validation top-1 {_kept_top1(settings):.2%}, the last epoch "
                              f"{settings.val_top1_per_epoch[-1]:.2%})", highlight=False)
            return


def _kept_top1(settings: FinetuneSettings) -> float:
    return settings.val_top1_per_epoch[settings.kept_epoch - 1]


def _fit(model, data: Dataset, settings: FinetuneSettings, seed: int, title: str, callbacks, from_logits: bool,
         targets, validation, quiet: bool, keeper=None) -> None:
    keras = tf_keras()
    keras.utils.set_random_seed(seed)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, max(1, settings.steps - settings.warmup_steps), warmup_target=settings.learning_rate,
        warmup_steps=settings.warmup_steps)
    if targets is None:
        loss, y = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits), data.y
        metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    elif settings.temperature != 1:
        n = class_count(targets, settings)
        loss, y = distillation_loss(n, settings.distillation, settings.temperature, from_logits), targets
        metric = keras.metrics.MeanMetricWrapper(lambda t, p: keras.metrics.categorical_accuracy(t[:, :n], p),
                                                 name="accuracy")
    else:
        loss, y = keras.losses.CategoricalCrossentropy(from_logits=from_logits), targets
        metric = keras.metrics.CategoricalAccuracy(name="accuracy")
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss, metrics=[metric])
    watchers = [] if validation is None else [_EpochTop1(validation, settings.val_top1_per_epoch), keeper]
    progress = [] if quiet else [_EpochBars(title, settings.epochs, steps_per_epoch(len(data), settings.batch_size))]
    model.fit(data.x, y, epochs=settings.epochs, batch_size=settings.batch_size, shuffle=True, verbose=0,
              callbacks=[*callbacks, *watchers, *progress])


class _Divergence(tf_keras().callbacks.Callback):
    """Notes when the epoch's running loss is above chance level, past the warm-up, and stops
    training there if `stop` (a restart at a lower rate follows)."""

    def __init__(self, chance: float, warmup_steps: int, stop: bool = True):
        super().__init__()
        self.chance, self.warmup_steps, self.stop = chance, warmup_steps, stop
        self.step, self.diverged = 0, False

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        loss = (logs or {}).get("loss")
        if self.step > max(3, self.warmup_steps) and loss is not None and not loss < self.chance:  # NaN too
            self.diverged = True
            self.model.stop_training = self.stop


class BestEpoch(tf_keras().callbacks.Callback):
    """Remembers the weights of the epoch with the best validation top-1 (read from `scores`,
    which _EpochTop1 fills just before) among the epochs ending after step `from_step`."""

    def __init__(self, scores: list, from_step: int = 0):
        super().__init__()
        self.scores, self.from_step = scores, from_step
        self.step, self.best, self.epoch, self.weights = 0, -1.0, None, None

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1

    def on_epoch_end(self, epoch, logs=None):
        # strictly after: the mask update of the schedule's last step happens during that step
        if self.step > self.from_step and self.scores and self.scores[-1] > self.best:
            self.best, self.epoch = self.scores[-1], len(self.scores)
            self.weights = None  # one copy at a time: on VGG16 a copy is 0.5 GiB
            self.weights = self.model.get_weights()  # every variable: masks, pruning step, ranges too

    def restore(self) -> int | None:
        """Put the kept epoch's weights back (when it was not the last); returns its number."""
        if self.weights is not None and self.epoch != len(self.scores):
            self.model.set_weights(self.weights)
        return self.epoch


class _EpochTop1(tf_keras().callbacks.Callback):
    """Validation top-1 of the model being trained, after every epoch."""

    def __init__(self, validation, into: list):
        super().__init__()
        self.x, self.y = validation
        self.into = into

    def on_epoch_end(self, epoch, logs=None):
        scores = np.concatenate([np.asarray(self.model(self.x[i:i + 128], training=False))
                                 for i in range(0, len(self.x), 128)])
        top1 = round(float(np.mean(np.argmax(scores, axis=1) == self.y)), 6)
        self.into.append(top1)
        if logs is not None:
            logs["val_top1"] = top1


class _EpochBars(tf_keras().callbacks.Callback):
    """One rich progress bar per epoch, with the running loss and accuracy, then validation top-1."""

    def __init__(self, title: str, epochs: int, steps: int):
        super().__init__()
        self.title, self.epochs, self.steps = title, epochs, steps
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[metrics]}"), TimeElapsedColumn(), console=console)

    def on_train_begin(self, logs=None):
        self.progress.start()

    def on_epoch_begin(self, epoch, logs=None):
        self.task = self.progress.add_task(f"{self.title} epoch {epoch + 1}/{self.epochs}", total=self.steps, metrics="")
        self.metrics = ""

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        self.metrics = f"loss {logs.get('loss', 0):.3f} acc {logs.get('accuracy', 0):.3f}"
        self.progress.update(self.task, completed=batch + 1, metrics=self.metrics)

    def on_epoch_end(self, epoch, logs=None):
        if logs and "val_top1" in logs:
            self.progress.update(self.task, metrics=f"{self.metrics} val top-1 {100 * logs['val_top1']:.2f}%")

    def on_train_end(self, logs=None):
        self.progress.stop()
