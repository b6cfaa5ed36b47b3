"""The web side's one way into recipes and run state changes, shared by the form and the API.

Every rule lives in the engine's validator; this module only maps a request (a preset with
overrides, or a whole recipe) to a validated ``Recipe`` and performs state changes with
conditional updates, so two requests racing on one run cannot both win.
"""

from __future__ import annotations

import re
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import transaction
from django.utils import timezone

from engine.layout import layout_report
from engine.net import egress
from engine.overrides import apply_overrides
from engine.presets import PRESETS
from engine.problems import Problem, RecipeError
from engine.recipe import Recipe
from engine.validation import validate
from webapp.runs.models import Run, Tag
from webapp.runs.paths import path_problems
from webapp.runs.quota import check_run_quota

#: A tag: letters, digits, ``-``, ``_``, ``.`` and ``:``; compared in lower case.
TAG_PATTERN = re.compile(r"^[\w.:-]{1,50}$")
MAX_TAGS = 20
_WEBHOOK_URL = URLValidator(schemes=["http", "https"])


class TransitionError(Exception):
    """A state change the run's current status does not allow; the message says why."""


def build_recipe(*, preset: str | None = None, recipe: Any = None, overrides: Any = None) -> Recipe:
    """A validated recipe from ``preset`` or ``recipe`` (plain data), then ``overrides``.

    Raises ``RecipeError`` with every problem at once; ``preset`` and ``overrides`` problems
    carry those names as their field. Paths outside ``GROUPWISE_DATA_ROOTS`` are problems too:
    a web user may not point the worker at arbitrary files.
    """
    if (preset is None) == (recipe is None):
        raise RecipeError([Problem("preset", "give either a preset name or a whole recipe")])
    if recipe is not None:
        if not isinstance(recipe, dict):
            raise RecipeError([Problem("recipe", "the recipe must be a JSON object")])
        base = Recipe.from_dict(recipe)
    elif preset is not None and preset in PRESETS:
        base = PRESETS[preset].recipe
    else:
        raise RecipeError(
            [Problem("preset", f"no preset named '{preset}': use one of {', '.join(PRESETS)}")]
        )
    if overrides:
        if not isinstance(overrides, dict):
            raise RecipeError(
                [Problem("overrides", "overrides must be a JSON object of name: value")]
            )
        base = apply_overrides(base, overrides)
    problems = [*validate(base), *path_problems(base)]
    if problems:
        raise RecipeError(problems)
    return base


def layout_dict(recipe: Recipe) -> dict[str, Any]:
    """The derived numbers a user checks before launching (seeds of the first rollout), with
    the memory plan per GPU under ``memory``."""
    return layout_report(recipe)


def create_run(
    owner: Any,
    name: str,
    recipe: Recipe,
    *,
    preset: str = "",
    cloned_from: Run | None = None,
    notify: dict[str, Any] | None = None,
    notes: str | None = None,
    tags: Any = None,
) -> Run:
    """Store a queued run and enqueue its training once the row is committed.

    ``notify`` sets the run's ``notify_email`` and ``webhook_url``, ``notes`` and ``tags`` its
    notes and tags, all in the one transaction: a create that fails leaves nothing behind.
    Raises ``quota.RateLimited`` when the owner has created too many runs lately; the owner's
    row is locked while counting, so concurrent requests of one user are counted one by one.
    """
    with transaction.atomic():
        list(get_user_model().objects.select_for_update().filter(pk=owner.pk).values_list("pk"))
        check_run_quota(owner)
        run = Run.objects.create(
            owner=owner,
            name=name.strip() or preset or "run",
            preset=preset,
            recipe=recipe.to_dict(),
            max_steps=recipe.run.max_steps,
            cloned_from=cloned_from,
            queued_at=timezone.now(),
            **(notify or {}),
        )
        if notes or tags:
            run = update_settings(run, notes=notes, tags=tags)
        _enqueue(run)
    return run


def cancel_run(run: Run) -> Run:
    """A queued run is cancelled at once; a running one is asked to stop between phases."""
    now = timezone.now()
    if Run.objects.filter(pk=run.pk, status=Run.Status.QUEUED).update(
        status=Run.Status.CANCELLED, finished_at=now
    ):
        run.refresh_from_db()
        return run
    if Run.objects.filter(pk=run.pk, status=Run.Status.RUNNING).update(
        status=Run.Status.CANCELLING
    ):
        run.refresh_from_db()
        return run
    run.refresh_from_db()
    raise TransitionError(
        f"run #{run.pk} is {run.status}: only queued or running runs can be cancelled"
    )


def resume_run(run: Run) -> Run:
    """Queue an interrupted, failed or cancelled run again; it continues from its checkpoint."""
    resumed = Run.objects.filter(pk=run.pk, status__in=Run.RESUMABLE).update(
        status=Run.Status.QUEUED, error="", finished_at=None, queued_at=timezone.now()
    )
    run.refresh_from_db()
    if not resumed:
        raise TransitionError(
            f"run #{run.pk} is {run.status}: only interrupted, failed or cancelled runs resume"
        )
    _enqueue(run)
    return run


def clone_run(run: Run, owner: Any, *, name: str = "", overrides: Any = None) -> Run:
    """A new queued run with ``run``'s recipe and ``overrides`` applied."""
    recipe = build_recipe(recipe=run.recipe, overrides=overrides)
    clone = create_run(
        owner,
        name or f"{run.name} (clone)",
        recipe,
        preset=run.preset,
        cloned_from=run,
        notify={"notify_email": run.notify_email, "webhook_url": run.webhook_url},
    )
    clone.tags.set(run.tags.all())
    return clone


class SettingsError(Exception):
    """Bad run settings (notes, tags, notifications): ``errors`` maps each field to messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


def parse_tags(value: Any) -> list[str]:
    """Tags from a list or a comma/space separated text, lower-cased, deduplicated, in order.

    Raises ``SettingsError`` naming the bad tag.
    """
    if isinstance(value, str):
        items = re.split(r"[,\s]+", value)
    elif isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        items = list(value)
    else:
        raise SettingsError({"tags": ["give a list of tags or a comma-separated text"]})
    tags = list(dict.fromkeys(item.strip().lower() for item in items if item.strip()))
    bad = [tag for tag in tags if not TAG_PATTERN.match(tag)]
    if bad:
        raise SettingsError(
            {"tags": [f"'{bad[0][:60]}' is not a tag: use up to 50 letters, digits, - _ . or :"]}
        )
    if len(tags) > MAX_TAGS:
        raise SettingsError({"tags": [f"{len(tags)} tags: use at most {MAX_TAGS}"]})
    return tags


def check_webhook_url(url: str) -> str:
    """The URL stripped, or a ``SettingsError`` saying what is wrong with it."""
    url = url.strip()
    if url:
        try:
            _WEBHOOK_URL(url)
        except ValidationError:
            raise SettingsError(
                {"webhook_url": [f"'{url[:100]}' is not an http(s) URL: e.g. https://host/hook"]}
            ) from None
        if egress.policy().url_problem(url):
            raise SettingsError(
                {
                    "webhook_url": [
                        f"'{url[:100]}' is {egress.REFUSED}: loopback, private and link-local "
                        f"addresses are reachable only where the administrator lists them in "
                        f"{egress.SETTING} (docs/deploy.md); use a public endpoint"
                    ]
                }
            )
    return url


def update_settings(
    run: Run,
    *,
    notes: str | None = None,
    tags: Any = None,
    notify_email: bool | None = None,
    webhook_url: str | None = None,
) -> Run:
    """Change the run's notes, tags and notifications; unset arguments stay as they are."""
    changes: dict[str, Any] = {}
    if notes is not None:
        changes["notes"] = notes
    if notify_email is not None:
        changes["notify_email"] = notify_email
    if webhook_url is not None:
        changes["webhook_url"] = check_webhook_url(webhook_url)
    names = parse_tags(tags) if tags is not None else None
    with transaction.atomic():
        if changes:
            Run.objects.filter(pk=run.pk).update(**changes)
        if names is not None:
            run.tags.set([Tag.objects.get_or_create(name=name)[0] for name in names])
    run.refresh_from_db()
    return run


def _enqueue(run: Run) -> None:
    from webapp.runs.tasks import train_run

    run_id = run.pk
    transaction.on_commit(lambda: train_run.delay(run_id))
