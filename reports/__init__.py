"""Rendering from saved results only; computes no statistic."""
