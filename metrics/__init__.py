"""Pure math on numpy arrays / pandas frames. Never imports torch or does I/O."""
