"""`dpo-eval rewardbench`: run.py scores RewardBench-style pairs with the implicit reward (`RewardBenchConfig`,
`rewardbench`); compat.py is RewardBench's own DPO tokenization (`--compat rewardbench`)."""
