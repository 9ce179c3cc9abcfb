"""koubo's web service: the REST API under /api, /metrics, and the browser UI at "/"."""
