"""Differential privacy: Opacus DP-SGD on clients, accounting, central-DP helpers."""
