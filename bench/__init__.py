"""Benchmarks (`just bench`) and the synthetic world they load."""
