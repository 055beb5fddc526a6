"""Preference-tuning training pieces: losses (one pure function each) and the recipe that uses them."""
