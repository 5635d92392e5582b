"""Background work of modelhub: the pure engine (passes, evaluation, planner, formats) and thin tasks."""
