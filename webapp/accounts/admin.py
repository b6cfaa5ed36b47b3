from django.contrib import admin

from webapp.accounts.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "user",
        "scope",
        "created_at",
        "expires_at",
        "last_used_at",
        "last_used_from",
    )
    list_filter = ("scope",)
    exclude = ("digest",)
    readonly_fields = ("last_used_at", "last_used_from")
