"""The SavedModel op allowlist against TensorFlow's own op registry."""

from __future__ import annotations

from edgekit.intake.saved_model_scan import ALLOWED_OPS, CHECKPOINT_OPS, PURE_OPS, WHY


def _registry():
    from edgekit.support.keras_compat import tensorflow

    tensorflow()
    from tensorflow.python.framework import op_def_registry

    return op_def_registry


def test_every_listed_op_exists_and_pure_ops_are_stateless():
    registry = _registry()
    for op in ALLOWED_OPS | CHECKPOINT_OPS:
        assert registry.get(op) is not None, f"{op} is not a TensorFlow op (a typo lets nothing through)"
    assert [op for op in PURE_OPS if registry.get(op).is_stateful] == []


def test_io_and_python_ops_are_never_allowed():
    """Including the ones TensorFlow registers as stateless (ReadFile, PyFuncStateless, …)."""
    registry = _registry()
    dangerous = [op for op in WHY if op not in CHECKPOINT_OPS]
    assert {"WriteFile", "ReadFile", "PrintV2", "PyFunc", "EagerPyFunc", "PyFuncStateless"} <= set(dangerous)
    assert not set(dangerous) & ALLOWED_OPS
    assert not CHECKPOINT_OPS & ALLOWED_OPS
    assert any(not registry.get(op).is_stateful for op in dangerous)  # why the registry is no guide
