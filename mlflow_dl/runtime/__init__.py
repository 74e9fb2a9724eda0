"""How fits run, by whose process it is: whether a process is mlflow-dl's (process), its heap kept out
of Python's collector (heap), the Keras/TensorFlow workarounds (tf_runtime), a trial's seeds and Keras
session (trial_state). In a user's process nothing here leaves anything process-wide changed (trial_state
puts back what it saves; tf_runtime touches only the fitted model's first train step); the README lists
each workaround and its fallback."""
