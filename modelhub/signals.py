"""Signals the registry sends; other apps listen without the registry importing them.

``routing_changed`` is sent (after the commit) whenever an alias of a model moves: a promotion
or a rollback (deployments are read-only in the admin), or a variant's serving option changes
(``services.variant_batching_set``). The serving app connects to it and moves its routing
generation, so every serving process rebuilds its route and warms the new primary itself.
"""

from __future__ import annotations

from django.dispatch import Signal

# Sent with ``model_name``: the name of the model whose routing changed.
routing_changed = Signal()
