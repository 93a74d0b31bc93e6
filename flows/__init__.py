"""Prefect flows over the ensgan stages."""
