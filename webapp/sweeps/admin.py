from django.contrib import admin

from webapp.sweeps.models import Sweep


@admin.register(Sweep)
class SweepAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "run", "status", "sizes", "rollouts", "worker", "created_at")
    list_filter = ("status",)
