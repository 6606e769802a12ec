"""The HTTP API (FastAPI): upload, status, output CSV, files, health."""

from imgbatch.api.app import create_app

__all__ = ["create_app"]
