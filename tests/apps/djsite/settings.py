import os

SECRET_KEY = "callwatch-tests"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "apps.djsite.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["callwatch.integrations.django.CallWatchMiddleware"]
DATABASES: dict[str, object] = {}
USE_TZ = True
CALLWATCH = os.environ.get("CALLWATCH_CONFIG")  # a YAML path (an inline dict works too)
LOGGING_CONFIG = None
