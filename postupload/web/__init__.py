"""The web process: the app factory, its blueprints (webhooks, health, metrics, console) and gunicorn
settings. `postupload.web:create_app()` is what gunicorn serves (Procfile)."""

from postupload.web.app import create_app

__all__ = ["create_app"]
