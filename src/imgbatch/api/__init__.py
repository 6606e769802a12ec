"""The HTTP API (FastAPI): upload, status, output CSV, files, health."""

from imgbatch.api.app import create_app
from imgbatch.api.protocol import protocol_with_deadlines

__all__ = ["create_app", "protocol_with_deadlines"]
