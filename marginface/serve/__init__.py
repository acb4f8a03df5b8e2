"""The REST service and its web page.

``create_app(settings)`` builds the FastAPI app (routes under ``/v1``, API keys with roles,
``/healthz``, ``/metrics``, ``/docs`` and the web page at ``/``); ``marginface serve`` runs it
with uvicorn. Settings come from ``MARGINFACE_*`` environment variables or a YAML file.
"""

from marginface.serve.app import app_from_env, create_app
from marginface.serve.auth import ROLE_RANK, bootstrap_admin_key
from marginface.serve.settings import ServeSettings, load_settings

__all__ = [
    "ROLE_RANK",
    "ServeSettings",
    "app_from_env",
    "bootstrap_admin_key",
    "create_app",
    "load_settings",
]
