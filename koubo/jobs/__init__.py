"""Persistent jobs: the database (store), the work queue and its workers (queue), and the one API
the web app, the UI and the CLI use (service.JobService)."""
