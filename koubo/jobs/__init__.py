"""Persistent jobs: the database (store), the queue's messages (huey_queue), the workers that claim
and watch jobs (consumer, supervisor, workers, recovery), the warm generation process that runs them
(generation_process, child), and the one API the web app, the UI and the CLI use (service.JobService)."""
