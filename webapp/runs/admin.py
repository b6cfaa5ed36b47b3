from django.contrib import admin

from webapp.runs.models import Checkpoint, Event, Run, Sample


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "owner", "preset", "status", "step", "max_steps", "created_at")
    list_filter = ("status", "preset")
    search_fields = ("name", "owner__username")


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("run", "seq", "type", "step", "time", "superseded")
    list_filter = ("type", "superseded")


@admin.register(Sample)
class SampleAdmin(admin.ModelAdmin):
    list_display = ("run", "step", "group_index", "index_in_group", "reward", "advantage", "seed")


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
    list_display = ("run", "step", "path", "created_at")
