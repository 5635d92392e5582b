"""Evaluation of model variants (pure: no Django): speed and memory (``bench``), output
accuracy against the original (``accuracy``) and the readiness verdict (``readiness``)."""
