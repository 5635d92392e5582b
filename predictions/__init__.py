"""Serving: the predict endpoint, routing, loaded runtimes, response cache and serving metrics."""
