"""Path converters of the URL routes; importing this module registers them."""

from __future__ import annotations

from django.urls import register_converter

from modelhub import services


class NameConverter:
    """``<name:...>``: a client-chosen name (a variant). Anything else, "../x" or "a#/.." included, is a
    404 from the resolver itself, before any view or lookup sees it (services.NAME_PATTERN)."""

    regex = services.NAME_PATTERN

    def to_python(self, value: str) -> str:
        if not services.name_is_valid(value):
            raise ValueError(value)
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(NameConverter, "name")
