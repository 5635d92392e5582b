"""Template filters that write numbers with their units (``{% load units %}``): see dashboard.numbers."""

from __future__ import annotations

from django import template

from modelhub.dashboard import numbers

register = template.Library()

register.filter("ms", numbers.milliseconds)
register.filter("size", numbers.megabytes)
register.filter("memory", numbers.memory)
register.filter("per_s", numbers.throughput)
register.filter("rate", numbers.rate)
register.filter("times", numbers.times)
register.filter("pct", numbers.percent)
register.filter("metric", numbers.metric)
register.filter("sig", numbers.significant)
