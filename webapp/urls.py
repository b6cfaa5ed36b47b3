from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/", include("webapp.api_urls")),
    # Before the runs' URLs: "runs/<id>/sweep/" would otherwise match "runs/<id>/<action>/".
    path("", include("webapp.sweeps.urls")),
    path("", include("webapp.runs.urls")),
    path("", include("webapp.accounts.urls")),
    path("", include("webapp.core.urls")),
]
