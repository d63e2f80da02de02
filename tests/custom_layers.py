"""A custom layer for the --trust-model --custom-objects tests (imported by module path)."""

from edgekit.support.keras_compat import tf_keras

keras = tf_keras()


@keras.utils.register_keras_serializable(package="edgekit_tests")
class Scale(keras.layers.Layer):
    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return super().get_config() | {"factor": self.factor}
