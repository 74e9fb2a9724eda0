"""Loading a logged model's Keras file: with safe_mode, after importing the custom classes it names.

Shipped inside every logged model as `mlflow_dl_keras_file` (the served model's code imports nothing of
mlflow_dl), and used as it is by the registry's safe-load check, so both load a model the same way.
"""

import importlib


def custom_classes(where: dict[str, str]) -> dict:
    """Keras name -> class, imported from each "module:Class" (a subclassed model, custom layers)."""
    return {name: getattr(importlib.import_module(w.partition(":")[0]), w.partition(":")[2])
            for name, w in where.items()}


def load(path: str, classes: dict):
    """The Keras 3 file at `path`, uncompiled, loaded with safe_mode=True; `classes`: custom_classes' answer."""
    import keras

    return keras.saving.load_model(path, custom_objects=classes, compile=False, safe_mode=True)
