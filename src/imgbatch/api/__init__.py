"""The HTTP API (FastAPI): upload, status, output CSV, files, health."""

from .app import create_app

__all__ = ["create_app"]
