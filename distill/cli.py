"""The `distill` command: one thin command per stage. Parsing and printing only; logic is in the stages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from distill.console import console

app = typer.Typer(
    help="R1-style reasoning distillation: generate teacher traces, filter them, train students, evaluate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
store_app = typer.Typer(help="Inspect and merge sample stores.", no_args_is_help=True)
app.add_typer(store_app, name="store")

RecipeOpt = Annotated[Path | None, typer.Option("--recipe", "-r", help="YAML recipe (see recipes/).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe key, e.g. --set sampling.n=8 (repeatable)."),
]

# Errors a user can fix; shown as one clear message without a traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = ()


def _user_errors() -> tuple[type[BaseException], ...]:
    global _USER_ERRORS
    if not _USER_ERRORS:
        from distill.config import RecipeError
        from distill.data import DataError
        from distill.models import ModelError
        from distill.store import StoreError

        _USER_ERRORS = (RecipeError, DataError, ModelError, StoreError)
    return _USER_ERRORS


def _fail(e: BaseException) -> None:
    console.print(f"[bold red]error:[/] {e}")
    raise typer.Exit(2)


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Sample store directory (created or resumed).")],
    recipe: RecipeOpt = None,
    set_: SetOpt = None,
    shard: Annotated[str | None, typer.Option(help="i/N: this node's slice of the problems, i from 0 to N-1.")] = None,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
) -> None:
    """Generate teacher traces into a resumable sample store (only missing samples are generated)."""
    from distill.config import load_recipe
    from distill.data import parse_shard
    from distill.generate import generate as run

    try:
        r = load_recipe(recipe, set_)
        summary = run(r, out, shard=parse_shard(shard), progress=progress)
    except _user_errors() as e:
        _fail(e)
    console.print(summary.table())
    console.print(f"samples: {out}/data/*.jsonl   manifest: {out}/manifest.json")
    if summary.status == "interrupted":
        console.print("[yellow]interrupted:[/] everything generated so far is kept; rerun the same command to resume")
        raise typer.Exit(130)


@store_app.command("merge")
def store_merge(
    sources: Annotated[list[Path], typer.Argument(help="Stores (directories) or JSONL files of samples.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Destination store (created or extended).")],
) -> None:
    """Join shard stores into one; only exact repeats of a key are dropped."""
    from distill.store import merge

    try:
        stats = merge(sources, out)
    except _user_errors() as e:
        _fail(e)
    for src in stats["sources"]:
        console.print(f"  {src['source']}: {src['samples']} samples")
    console.print(
        f"merged into {out}: {stats['written']} written, {stats['already_present']} already present"
        + (f", [yellow]{stats['conflicts']} key(s) with different content kept as first seen[/]" if stats["conflicts"] else "")
    )


@store_app.command("info")
def store_info(store: Annotated[Path, typer.Argument(help="A sample store directory.")]) -> None:
    """Counts, runs and settings of a store."""
    from distill.store import SampleStore

    s = SampleStore(store)
    try:
        if not s.exists():
            raise typer.BadParameter(f"{store}: not a sample store")
        m, c = s.read_manifest(), s.count()
    except _user_errors() as e:
        _fail(e)
    console.print(f"{store}: {c['samples']} samples of {c['problems']} problems in {c['files']} file(s)")
    for run in m.get("runs", []):
        if "merge" in run:
            console.print(f"  merge at {run['at']}: {run['merge']['written']} written")
        else:
            console.print(f"  run {run.get('started_at')} shard={run.get('shard')} {run.get('status')}: "
                          f"{run.get('generated')} generated")


def _not_yet(stage: str, issue: int) -> None:
    console.print(f"[bold red]error:[/] `distill {stage}` is not in this version yet (tracked in issue {issue}).")
    raise typer.Exit(2)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def filter() -> None:
    """Rejection filter: keep verified-correct, readable, one-language traces. (Not in this version yet.)"""
    _not_yet("filter", 4)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train() -> None:
    """SFT a student on filtered traces (TRL, PEFT, accelerate). (Not in this version yet.)"""
    _not_yet("train", 5)


@app.command("eval", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def eval_() -> None:
    """Evaluate a student: pass@1 over k samples, cons@k, intervals. (Not in this version yet.)"""
    _not_yet("eval", 6)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def grpo() -> None:
    """Train a student by GRPO with the filter's verifier as reward. (Not in this version yet.)"""
    _not_yet("grpo", 6)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
