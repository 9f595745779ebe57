"""Evaluation: metrics that match the field's reference implementations, a task harness, and reports.

`lmforge.eval.metrics` holds the metrics (text, classification, retrieval, LM, embedding, efficiency),
`bootstrap` the confidence intervals, `harness` the task types and task files, `report` the JSON and
Markdown output.
"""
