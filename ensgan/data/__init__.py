"""Data in: dataset readers, and the prepared arrays every later stage reads."""
