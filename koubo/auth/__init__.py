"""Who may come in: htpasswd files, Basic credential checks and the back-off after failed logins.

Below both the web app and the link server, which guard their pages with the same password file.
"""
