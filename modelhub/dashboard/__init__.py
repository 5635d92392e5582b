"""The dashboard: models, versions, charts, jobs, promotion and history pages for staff users."""
