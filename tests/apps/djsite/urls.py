from django.urls import path

from . import views

urlpatterns = [
    path("items/<int:n>/", views.items, name="item_list"),
    path("aitems/<int:n>/", views.aitems, name="aitem_list"),
    path("unnamed/", views.unnamed),
    path("stream/<int:n>/", views.stream, name="stream"),
    path("boom/", views.boom, name="boom"),
    path("e500/", views.error500, name="e500"),
]
