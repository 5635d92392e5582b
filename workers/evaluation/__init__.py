"""Evaluation of model variants (pure: no Django): speed and memory (``bench``), output accuracy
against the original (``accuracy``), the readiness verdict (``readiness``) and plain-language
advice on the ranked variants (``advisor``)."""
