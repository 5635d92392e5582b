"""The root of the engine's errors (pure engine: no Django).

Every error the engine raises for a model, a dataset, a plan, a pass or a measurement derives
from ``EngineError``, so the job runner turns any of them into a failed job with the message as
its reason, and nothing else (a bug) is mistaken for bad input.
"""

from __future__ import annotations


class EngineError(Exception):
    """Something about the input (model, data, plan, options) or the host the engine cannot work with;
    the message says what, in words a person can act on."""
