"""The web process: the app factory, its blueprints (webhooks, health, metrics, console) and gunicorn
settings. `postupload.web:create_app()` is what gunicorn serves (Procfile).

`create_app` is imported on first use, not with this package: gunicorn's master imports the package
for its settings (`postupload.web.serving`), and the app's imports (redis, the SDK) bring in ssl,
which gevent must patch first, in each worker (else a MonkeyPatchWarning on every start).
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from postupload.web.app import create_app

        return create_app
    raise AttributeError(name)
