"""Evaluation: the feature net, the metrics, and the report people read."""
