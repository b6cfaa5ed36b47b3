"""The New run form: one text field per recipe setting, grouped as the recipe is.

The form holds no rule of its own. Its values become overrides of the chosen preset, as text
(the engine parses each one for its setting's type), and the engine's one validator reports the
problems, each put back on its field. A prompt file upload replaces the inline prompts.
"""

from __future__ import annotations

import json
from dataclasses import fields, is_dataclass
from typing import Any

from django import forms
from django.conf import settings

from engine.presets import PRESETS
from engine.problems import Problem, RecipeError
from engine.prompts import parse_prompt_text
from engine.recipe import RETIRED, Recipe, field_docs
from engine.recipe import settings as recipe_settings
from webapp.runs import services

#: Recipe sections shown as fieldsets, in order; rewards is edited as JSON.
SECTIONS = ("layout", "sampler", "optimiser", "run", "data", "model", "rollout")
#: Settings edited as one prompt per line rather than JSON.
LINE_LISTS = {"data.prompts", "data.eval_prompts"}
#: An upload becomes data.prompts: it may hold as many prompts as that setting.
MAX_PROMPTS: int = dict(recipe_settings())["data.prompts"].metadata["items"]
#: Prompt files by extension; the browser's content type must be one a text file may carry.
UPLOAD_SUFFIXES = (".txt", ".jsonl")
UPLOAD_CONTENT_TYPES = {
    "",
    "text/plain",
    "application/octet-stream",
    "application/json",
    "application/jsonl",
    "application/x-jsonlines",
    "application/jsonlines",
    "application/x-ndjson",
}


def form_name(path: str) -> str:
    """The HTML field name of a dotted recipe path (``layout.n_samples_per_prompt``)."""
    return path.replace(".", "__")


def recipe_paths() -> list[tuple[str, list[str]]]:
    """(section, [dotted paths]) for every scalar or list setting the form edits."""
    sections = []
    for section in SECTIONS:
        config = getattr(Recipe(), section)
        assert is_dataclass(config)
        sections.append((section, [f"{section}.{f.name}" for f in fields(config)]))
    return sections


def display_value(value: Any, path: str) -> Any:
    """How a recipe value appears in its input."""
    if path in LINE_LISTS:
        return "\n".join(value)
    if isinstance(value, bool) or value is None:
        return value if value is not None else ""
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    return str(value)


class NewRunForm(forms.Form):
    preset = forms.ChoiceField(choices=[(name, name) for name in PRESETS])
    name = forms.CharField(max_length=200, required=False)
    rewards = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text='JSON list of {"name", "weight", "path"}; scores are summed with the weights.',
    )
    prompt_file = forms.FileField(
        required=False,
        help_text='Optional .txt (one prompt per line) or .jsonl ({"prompt": …} per line), '
        "UTF-8 text, at most GROUPWISE_MAX_UPLOAD_BYTES (5 MB by default); replaces the "
        "training prompts.",
    )

    tags = forms.CharField(
        required=False, max_length=1100, help_text="Comma or space separated, e.g. ocr, lr-sweep."
    )
    notify_email = forms.BooleanField(
        required=False,
        label="email me",
        help_text="An email to your address when the run finishes, fails or is interrupted.",
    )
    webhook_url = forms.CharField(
        required=False,
        max_length=500,
        help_text="Optional http(s) URL that receives a JSON POST when the run ends.",
    )

    def __init__(self, *args: Any, preset: str, **kwargs: Any) -> None:
        recipe = PRESETS[preset].recipe.to_dict()
        docs = field_docs()
        kwargs["initial"] = {"preset": preset, "rewards": json.dumps(recipe["rewards"])}
        super().__init__(*args, **kwargs)
        self.sections: list[tuple[str, list[str]]] = []
        for section, paths in recipe_paths():
            names = []
            for path in paths:
                key = path.split(".", 1)[1]
                value = recipe[section].get(key)
                name = form_name(path)
                self.fields[name] = self._field_for(path, value, docs.get(path, ""))
                self.initial[name] = display_value(value, path)
                names.append(name)
            self.sections.append((section, names))
        self.built: Recipe | None = None
        self.upload_report: dict[str, Any] | None = None

    @staticmethod
    def _field_for(path: str, value: Any, doc: str) -> forms.Field:
        label = path.split(".", 1)[1]
        if isinstance(value, bool):
            return forms.BooleanField(required=False, label=label, help_text=doc)
        if path in LINE_LISTS:
            widget: forms.Widget = forms.Textarea(attrs={"rows": 4})
        else:
            widget = forms.TextInput()
        return forms.CharField(
            required=False, label=label, help_text=doc, widget=widget, strip=True
        )

    def overrides(self) -> dict[str, Any]:
        """The form's values as engine overrides (text; the engine parses each)."""
        data = self.cleaned_data
        result: dict[str, Any] = {"rewards": data.get("rewards", "")}
        for _section, paths in recipe_paths():
            for path in paths:
                value = data.get(form_name(path))
                if path in LINE_LISTS:
                    value = [line.strip() for line in (value or "").splitlines() if line.strip()]
                elif isinstance(value, bool):
                    value = "true" if value else "false"
                result[path] = value
        if self.upload_report is not None:
            result["data.prompts"] = self.upload_report["prompts"]
            result["data.dataset"] = ""
        return result

    def clean_tags(self) -> list[str]:
        try:
            return services.parse_tags(self.cleaned_data.get("tags", ""))
        except services.SettingsError as error:
            raise forms.ValidationError(error.errors["tags"]) from None

    def clean_webhook_url(self) -> str:
        try:
            return services.check_webhook_url(self.cleaned_data.get("webhook_url", ""))
        except services.SettingsError as error:
            raise forms.ValidationError(error.errors["webhook_url"]) from None

    def clean_prompt_file(self) -> Any:
        upload = self.cleaned_data.get("prompt_file")
        if upload is None:
            return None
        limit = settings.GROUPWISE_MAX_UPLOAD_BYTES
        if upload.size > limit:
            raise forms.ValidationError(
                f"{upload.name} is {human_bytes(upload.size)}: the limit is {human_bytes(limit)}; "
                "split the file or point data.dataset at a directory on the worker."
            )
        suffix = "." + upload.name.rsplit(".", 1)[-1].lower() if "." in upload.name else ""
        if suffix not in UPLOAD_SUFFIXES:
            raise forms.ValidationError(
                f"{upload.name} is not a prompt file: upload a .txt (one prompt per line) or "
                '.jsonl ({"prompt": …} per line) file.'
            )
        content_type = (upload.content_type or "").split(";")[0].strip().lower()
        if content_type not in UPLOAD_CONTENT_TYPES:
            raise forms.ValidationError(
                f"{upload.name} was sent as {content_type}, not text: upload a plain text file."
            )
        try:
            text = upload.read().decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise forms.ValidationError(
                f"{upload.name} is not UTF-8 (byte {error.start}): save it as UTF-8."
            ) from None
        if "\0" in text:
            raise forms.ValidationError(
                f"{upload.name} holds NUL bytes, so it is binary, not text: upload a text file."
            )
        prompts = parse_prompts(text, jsonl=suffix == ".jsonl")
        if not prompts:
            raise forms.ValidationError(f"{upload.name} holds no prompts.")
        if len(prompts) > MAX_PROMPTS:
            raise forms.ValidationError(f"{len(prompts)} prompts: the limit is {MAX_PROMPTS}.")
        self.upload_report = {"name": upload.name, "prompts": prompts, "count": len(prompts)}
        return upload

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        # A retired setting posted by hand (or an old saved form) is refused like the API
        # refuses it, rather than silently dropped with the rest of the unknown fields.
        for path, where in RETIRED.items():
            if form_name(path) in self.data:
                self.add_error(None, f"{path} is not a recipe setting: {where}")
        if self.errors:
            return cleaned
        try:
            self.built = services.build_recipe(preset=cleaned["preset"], overrides=self.overrides())
        except RecipeError as error:
            self._attach(error.problems)
        return cleaned

    def _attach(self, problems: tuple[Problem, ...]) -> None:
        if self.upload_report is not None:
            # The uploaded file became data.prompts: its problems belong to the upload, summed
            # up rather than one error per line of a large file.
            from_file = [p for p in problems if p.field.startswith("data.prompts[")]
            if from_file:
                self.add_error(
                    "prompt_file",
                    f"{len(from_file)} line(s) of {self.upload_report['name']} need fixing; "
                    f"first: {from_file[0].message}",
                )
            problems = tuple(p for p in problems if p not in from_file)
        for problem in problems:
            name = form_name(problem.field.split("[", 1)[0])
            if problem.field.startswith("rewards"):
                name = "rewards"
            if name in self.fields:
                self.add_error(name, problem.message)
            else:
                self.add_error(None, f"{problem.field}: {problem.message}")


def human_bytes(size: int) -> str:
    """``5.24 MB``, ``12 kB`` or ``10 bytes``."""
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"


def parse_prompts(text: str, *, jsonl: bool) -> list[str]:
    """Prompts from a text file (one per line) or JSONL (``{"prompt": ...}`` per line), by the
    engine's one parser of prompt files."""
    try:
        return list(parse_prompt_text(text, jsonl=jsonl, source="", field="prompt_file"))
    except RecipeError as error:
        raise forms.ValidationError(error.problems[0].message) from None
