"""The test site's URLs plus the async views of ``asgi_views`` (ROOT_URLCONF of asgi_settings)."""

from django.urls import path

from . import asgi_views as av
from .urls import urlpatterns as site_urlpatterns

urlpatterns = [
    *site_urlpatterns,
    path("a/gather/<int:n>/", av.gather, name="a_gather"),
    path("a/thread/<int:n>/", av.in_thread, name="a_thread"),
    path("a/stream/<int:n>/", av.stream, name="a_stream"),
    path("a/boom/", av.boom, name="a_boom"),
]
