"""Evaluation: metrics that match the field's reference implementations, a task harness, and reports.

`lmforge.eval.metrics` holds the metrics (text, classification, retrieval, LM, embedding, efficiency),
`bootstrap` the confidence intervals, `harness` the task types and task files, `report` the JSON and
Markdown output. Beyond overlap metrics: `judge` (LLM-as-judge, Bradley–Terry / Elo), `agreement`
(Cohen's / Fleiss' kappa, Krippendorff's alpha), `refree` (GPTScore, FED-style), `human` (the rating
page), `safety` (toxicity, RealToxicityPrompts protocol), `bias` (minimal-pair probes) and
`consistency` (claim-level factual consistency).
"""
