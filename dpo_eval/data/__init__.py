"""Loading and normalising input data."""
