"""Generations, LLM judges and the judgments they produce."""
