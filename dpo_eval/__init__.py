"""dpo-eval: evaluate and diagnose preference-tuned (DPO-family) language models."""

__version__ = "0.1.0"
