"""Running koubo as a service: its log."""
