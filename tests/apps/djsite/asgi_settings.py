"""The test site under ASGI (``DJANGO_SETTINGS_MODULE=apps.djsite.asgi_settings``): its
settings, with the async views' URLs added."""

from .settings import *  # noqa: F401,F403

ROOT_URLCONF = "apps.djsite.asgi_urls"
