"""How mlflow-dl's own processes run fits: whether a process is mlflow-dl's (process), its heap
kept out of Python's collector (heap), and the Keras/TensorFlow workarounds (tf_runtime).
Nothing here is applied in a user's process; the README lists each workaround and its fallback."""
