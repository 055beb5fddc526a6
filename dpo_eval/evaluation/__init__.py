"""`dpo-eval report`: discover a run's checkpoints and inputs, evaluate them, write the report."""
