"""Data: load a data set, validate it, split it and fit the scalers on train only.

Knows nothing of MLflow or Keras.
"""
