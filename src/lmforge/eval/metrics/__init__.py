"""Metrics by family; `lmforge.eval.metrics.registry` maps metric names to text-metric functions."""
