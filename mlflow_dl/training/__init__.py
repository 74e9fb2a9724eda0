"""One tracked trial (`trial.run_trial`), its pruning, resuming a killed run, and residual diagnostics."""
