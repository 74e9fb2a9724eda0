"""Experiment families: what each one varies, its defaults, and how it is compared."""
