"""Template filters of the registry's pages."""
