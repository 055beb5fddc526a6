"""`dpo-eval gate`: run.py checks a results.json (or the report of a run) against thresholds, file.py reads
and checks gate.yaml, config.py holds `GateConfig` (every default) and the exit codes; see run.py."""
