from django.urls import path

from webapp.accounts import views

urlpatterns = [
    path("tokens/", views.tokens, name="tokens"),
]
