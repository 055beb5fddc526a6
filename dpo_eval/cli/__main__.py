"""`python -m dpo_eval.cli` (what torchrun launches): the `dpo-eval` command line."""

from dpo_eval.cli import main

main()
