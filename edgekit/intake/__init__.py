"""What comes in: model files (vetting, safe loading, the SavedModel op scan, the Keras 3 → tf_keras
bridge), calibration and validation data, and `inspect`.

See docs/architecture.md."""
