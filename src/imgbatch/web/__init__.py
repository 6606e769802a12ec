"""The dashboard: static pages and scripts, served by the app, that read the public API.

Holds: `routes` (page shells, the before/after view, static files, favicon) and `policy`
(the pages' Content-Security-Policies, pure). The pages live in `pages/`, their scripts and
styles in `static/` (plain ES modules and CSS: no build step, nothing from another origin).
May import: the services (reports) and everything below them.
"""

from __future__ import annotations

from .routes import router

__all__ = [
    "router",
]
