"""The headless command line: ``python -m engine validate | layout | train | sweep |
serve-rollout``.

Exit codes: 0 success, 2 an invalid recipe or arguments (each problem printed with its field
and fix), 1 a run that failed, 130 a run stopped by Ctrl-C (resumable: run the same command).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from engine.layout import layout, layout_report
from engine.memory.plan import PHASE_WORDS, MemoryPlan, memory_plan
from engine.models.precision import DTYPES
from engine.overrides import apply_overrides, parse_assignments
from engine.presets import PRESETS
from engine.problems import RecipeError
from engine.recipe import Recipe
from engine.validation import validate

EXIT_INVALID = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("validate", "check a recipe and print every problem"),
        ("layout", "print the derived layout of a valid recipe"),
        ("train", "train headless: events as JSONL and images under --out; resumes from it"),
        ("sweep", "measure every valid diffusion_microgroup_size on the same seeds"),
    ):
        sub = commands.add_parser(name, help=help_text)
        _recipe_arguments(sub)
        if name == "train":
            sub.add_argument("--out", required=True, type=Path, help="the run's folder")
            sub.add_argument(
                "--nproc",
                type=int,
                default=None,
                help="trainer processes: num_gpus (the default; gloo ranks on CPU) or 1",
            )
        if name == "sweep":
            _sweep_arguments(sub)
        if name == "layout":
            sub.add_argument(
                "--json", action="store_true", help="print the layout and memory plan as JSON"
            )
    serve = commands.add_parser(
        "serve-rollout", help="serve rollouts over SGLang-D's HTTP protocol (docs/sglang.md)"
    )
    serve.add_argument(
        "--model",
        "--model-path",
        dest="model",
        required=True,
        help="'tiny' or a local diffusers directory (--model-path as sglang serve names it)",
    )
    serve.add_argument("--family", help="model family (default: read from model_index.json)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind")
    serve.add_argument("--port", type=int, default=30000, help="port to bind; 0 picks a free one")
    serve.add_argument(
        "--dtype",
        choices=list(DTYPES),
        default=None,
        help="dtype to load and compute in (default: as an empty model.dtype, bfloat16 for a "
        "real model on a GPU, float32 for the tiny model and on the CPU)",
    )
    return parser


def _sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        metavar="M,M,...",
        help="microgroup sizes to sweep, e.g. 1,2,4 (default: every divisor of G)",
    )
    parser.add_argument("--rollouts", type=int, default=2, help="rollouts per size (default 2)")
    parser.add_argument("--update", action="store_true", help="also train on each rollout")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the report")


def _sizes(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 1,2,4") from None


def _recipe_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("recipe_file", nargs="?", help="a recipe in TOML or JSON")
    source.add_argument("--preset", choices=sorted(PRESETS), help="start from a preset")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting by its name or dotted path (values are JSON when they parse)",
    )


def load_recipe(args: argparse.Namespace) -> Recipe:
    """The recipe the arguments name, with ``--set`` applied; raises ``RecipeError``."""
    recipe = PRESETS[args.preset].recipe if args.preset else Recipe.load(Path(args.recipe_file))
    return apply_overrides(recipe, parse_assignments(args.overrides))


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve-rollout":
        from engine.rollout.server import serve

        return serve(args.model, args.family, args.host, args.port, args.dtype)
    try:
        recipe = load_recipe(args)
    except RecipeError as error:
        return _report(error, out)
    except OSError as error:
        print(f"cannot read the recipe: {error}", file=out)
        return EXIT_INVALID
    problems = validate(recipe)
    if problems:
        return _report(RecipeError(problems), out)
    if args.command == "validate":
        print("valid", file=out)
        _print_memory(memory_plan(recipe), out)
        return 0
    if args.command == "train":
        from engine.cli.train import train
        from engine.run.ranks import rank_problem

        problem = rank_problem(recipe, args.nproc or recipe.layout.num_gpus)
        if problem is not None:
            print(f"--nproc: {problem}", file=out)
            return EXIT_INVALID
        return train(recipe, args.out, out, args.nproc)
    if args.command == "sweep":
        from engine.cli.sweep import run_sweep

        try:
            return run_sweep(
                recipe,
                sizes=args.sizes,
                rollouts=args.rollouts,
                update=args.update,
                json_path=args.json,
                out=out,
            )
        except RecipeError as error:
            return _report(error, out)
    if args.json:
        print(json.dumps(layout_report(recipe), indent=2), file=out)
        return 0
    return _print_layout(recipe, out)


def _report(error: RecipeError, out: TextIO) -> int:
    print(f"invalid recipe: {len(error.problems)} problem(s)", file=out)
    for problem in error.problems:
        print(f"  {problem.field}: {problem.message}", file=out)
    return EXIT_INVALID


def _print_layout(recipe: Recipe, out: TextIO) -> int:
    derived = layout(recipe).to_dict()
    derived.pop("first_group_seeds")
    width = max(len(key) for key in derived)
    for key, value in derived.items():
        print(f"{key:<{width}}  {value}", file=out)
    _print_memory(memory_plan(recipe), out)
    return 0


#: Characters of the widest memory bar, which stands for gpu_memory_gb.
BAR_WIDTH = 40


def _print_memory(plan: MemoryPlan, out: TextIO) -> None:
    """The plan as a table with a bar per item, scaled to the GPU's memory; items outside the
    peak phase are marked and left out of the total."""
    print(
        f"\nmemory per GPU: {plan.total_gb:.1f} of {plan.gpu_memory_gb:g} GB "
        f"({'fits' if plan.fits else 'does not fit'}; peak while {PHASE_WORDS[plan.peak_phase]}; "
        f"{plan.architecture} from {plan.source})",
        file=out,
    )
    width = max(len(item.name) for item in plan.items)
    for item in plan.items:
        bar = "#" * round(BAR_WIDTH * item.gb / plan.gpu_memory_gb)
        mark = " " if plan.counted(item) else "-"
        print(
            f"{mark} {item.name:<{width}}  {item.gb:6.1f} GB  {bar:<{BAR_WIDTH}}  {item.note}",
            file=out,
        )
