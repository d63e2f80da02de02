"""Repairs that keep every layer integer (issue 26): changes to the float Keras model, made once
before export so that they reach every format through the same path."""
