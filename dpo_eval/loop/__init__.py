"""`dpo-eval loop`: iterative DPO (sample, label, pair, train, repeat); see dpo_eval.loop.run."""
