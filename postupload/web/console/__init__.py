"""The console: what ops look at (`/console/` on the web process). Server-rendered, no JavaScript.

Off unless POSTUPLOAD_CONSOLE_TOKEN is set. Every page asks for the token, as `Authorization: Bearer`
or through the login form, which starts a session: a random HttpOnly, SameSite=Strict cookie, kept
in Redis (by its hash) with a CSRF value of its own for 12 hours or until logout. Every POST from a
cookie session carries that CSRF value. Wrong tokens are throttled per client address.
"""

from postupload.web.console import auth, filters, views
from postupload.web.console.blueprint import console

__all__ = ["auth", "console", "filters", "views"]
