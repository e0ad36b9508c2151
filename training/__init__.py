"""Offline training of the two-tower model whose item vectors and user head serving uses."""
