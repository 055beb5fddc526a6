"""Glue between saved artifacts (samples, pairs) and the engine's diagnostic passes (KL, entropy)."""
