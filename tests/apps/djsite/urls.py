from django.urls import path

from . import matrix_views as mx, views

urlpatterns = [
    path("items/<int:n>/", views.items, name="item_list"),
    path("aitems/<int:n>/", views.aitems, name="aitem_list"),
    path("unnamed/", views.unnamed),
    path("stream/<int:n>/", views.stream, name="stream"),
    path("boom/", views.boom, name="boom"),
    path("e500/", views.error500, name="e500"),
    # tests/test_matrix.py: sync views under mx/, async ones under mx/a/
    path("mx/work/<int:n>/", mx.work, name="mx_work"),
    path("mx/boom/", mx.boom, name="mx_boom"),
    path("mx/e503/", mx.e503, name="mx_e503"),
    path("mx/stream/<int:n>/", mx.stream, name="mx_stream"),
    path("mx/renamed/", mx.renamed, name="mx_renamed"),
    path("mx/a/work/<int:n>/", mx.awork, name="mx_awork"),
    path("mx/a/boom/", mx.aboom, name="mx_aboom"),
    path("mx/a/e503/", mx.ae503, name="mx_ae503"),
    path("mx/a/stream/<int:n>/", mx.astream, name="mx_astream"),
    path("mx/a/renamed/", mx.arenamed, name="mx_arenamed"),
]
