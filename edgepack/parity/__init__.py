"""Parity: compare a bundle's outputs with the reference model's, output by output. Framework-free."""
