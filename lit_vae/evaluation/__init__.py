"""Evaluation: fidelity and anomaly-detection metrics, HEP-style figures, the report page."""
