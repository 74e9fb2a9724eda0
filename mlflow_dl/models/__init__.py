"""Model builders: spec in, compiled keras.Model out. Knows nothing of MLflow."""
