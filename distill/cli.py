"""The `distill` command: one thin command per stage. Parsing and printing only; logic is in the stages."""

from __future__ import annotations

import json
import os
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


def _version(value: bool) -> None:
    if value:
        from distill import __version__

        typer.echo(f"distill {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """R1-style reasoning distillation: generate teacher traces, filter them, train students, evaluate."""

RecipeOpt = Annotated[Path | None, typer.Option("--recipe", "-r", help="YAML recipe (see recipes/).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe key, e.g. --set sampling.n=8 (repeatable)."),
]

UnsafeOpt = Annotated[bool, typer.Option(
    "--unsafe-no-sandbox", help="Run model-written code (code problems) WITHOUT the bubblewrap sandbox, limits only. "
                                "Only inside a container of your own, where bwrap cannot start.")]


def _unsafe(sets: list[str] | None, unsafe: bool, *keys: str) -> list[str]:
    """--unsafe-no-sandbox as recipe overrides, said out loud."""
    sets = list(sets or [])
    if unsafe:
        console.print("[bold red]warning:[/] --unsafe-no-sandbox: model-written code runs as this user, with this "
                      "user's files and network; only resource limits apply")
        sets += [f"{k}=true" for k in keys]
    return sets


# Errors a user can fix; shown as one clear message without a traceback.
_USER_ERRORS: tuple[type[BaseException], ...] = ()


def _user_errors() -> tuple[type[BaseException], ...]:
    global _USER_ERRORS
    if not _USER_ERRORS:
        from distill.config import RecipeError
        from distill.data import DataError
        from distill.lock import OutputLocked
        from distill.models import ModelError
        from distill.prompts import PromptError
        from distill.store import StoreError
        from distill.teachers.base import TeacherError
        from distill.train.trl_seam import TrlSeamError

        _USER_ERRORS = (RecipeError, DataError, ModelError, PromptError, StoreError, TeacherError, OutputLocked,
                        TrlSeamError)
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
    max_failures: Annotated[float | None, typer.Option(
        "--max-failures", min=0, help="Stop when more requests than this failed for good: a count (50) or, below 1, a "
                               "share of the finished ones (0.1). Default: teacher.max_failures.")] = None,
) -> None:
    """Generate teacher traces into a resumable sample store (only missing samples are generated).

    Exit status: 0 all planned samples stored; 3 some requests failed for good (stored under
    failures/, retried by a rerun); 4 stopped by --max-failures; 130 interrupted; 2 bad input."""
    from distill.config import load_recipe
    from distill.data import parse_shard
    from distill.generate import generate as run

    try:
        r = load_recipe(recipe, set_)
        summary = run(r, out, shard=parse_shard(shard), progress=progress, max_failures=max_failures)
    except _user_errors() as e:
        _fail(e)
    console.print(summary.table())
    console.print(f"samples: {out}/data/*.jsonl   manifest: {out}/manifest.json")
    if summary.status == "interrupted":
        console.print("[yellow]interrupted:[/] everything generated so far is kept; rerun the same command to resume")
        raise typer.Exit(130)
    if summary.failed:
        for ex in summary.failure_examples:
            console.print(f"  [red]failed[/] {ex}")
        causes = ", ".join(f"{k}: {v}" for k, v in summary.failures_by_cause.items())
        console.print(f"[yellow]{summary.failed} request(s) failed for good[/] ({causes}); each is recorded in "
                      f"{out}/failures/ with its status, message and attempts. Every other sample is stored; "
                      "rerun the same command to retry only the failed and missing ones.")
    if summary.status == "aborted":
        console.print(f"[red]stopped:[/] more failures than max_failures={max_failures if max_failures is not None else r.teacher.max_failures} "
                      "(the server looks broken, not one prompt); fix it and rerun, nothing stored is lost")
        raise typer.Exit(4)
    if summary.failed:
        raise typer.Exit(3)


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
        m, c = s.read_manifest(), s.count(warn=True)
    except _user_errors() as e:
        _fail(e)
    # to stdout: what a user asked to see (`distill store info S > file` keeps it)
    typer.echo(f"{store}: {c['samples']} samples of {c['problems']} problems in {c['files']} file(s)")
    for run in m.get("runs", []):
        if "merge" in run:
            typer.echo(f"  merge at {run['at']}: {run['merge']['written']} written")
        else:
            status = run.get("status")
            if status == "running" and _gone(run.get("host") or {}):
                status = "ended without finishing (killed?)"
            typer.echo(f"  run {run.get('started_at')} shard={run.get('shard')} {status}: "
                       f"{run.get('generated')} generated")


def _gone(h: dict) -> bool:
    """A run recorded as running by a process of this host that no longer exists."""
    import socket

    if h.get("hostname") != socket.gethostname() or not h.get("pid"):
        return False
    try:
        os.kill(int(h["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


@app.command()
def filter(
    inp: Annotated[Path | None, typer.Option("--in", "-i", help="A sample store or a JSONL file of samples.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory (kept, rejected, report).")] = None,
    recipe: RecipeOpt = None,
    set_: SetOpt = None,
    explain: Annotated[str | None, typer.Option(help="Show every check's value for the sample with this key.")] = None,
    shard: Annotated[str | None, typer.Option(help="i/N: judge only this slice of the problems (one per machine; the slicing of `distill generate --shard`), then join the shards' outputs with --merge.")] = None,
    merge: Annotated[list[str] | None, typer.Option(help="Join the output directories of `--shard i/N` runs (repeat, or a quoted glob such as 'out/shard-*') into --out.")] = None,
    skip_bad_lines: Annotated[bool, typer.Option(help="Skip and count malformed input lines instead of failing.")] = False,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
    unsafe_no_sandbox: UnsafeOpt = False,
) -> None:
    """Rejection filter: keep verified-correct, complete, readable, one-language traces; explain every rejection.

    The input is streamed (memory does not grow with it); a rerun reuses the verdicts already made
    (OUT/.filter-state.sqlite). Code problems (docs/code.md) are verified by running their tests in
    a bubblewrap sandbox."""
    from distill.config import load_recipe
    from distill.data import parse_shard
    from distill.filter import explain as explain_one
    from distill.filter import filter_samples, merge_filtered

    try:
        if merge:
            if out is None:
                raise typer.BadParameter("--merge needs --out: the directory the shards are joined into")
            if inp is not None or shard:
                raise typer.BadParameter("--merge joins finished shards; give it no --in or --shard")
            report = merge_filtered(merge, out, progress=progress)
        else:
            if inp is None:
                raise typer.BadParameter("--in is required: a sample store or a JSONL file of samples")
            r = load_recipe(recipe, _unsafe(set_, unsafe_no_sandbox, "filter.correct.code.unsafe_no_sandbox"))
            if explain:
                sample, verdict = explain_one(inp, explain, r.filter, r.eval)
                _print_explain(sample, verdict)
                return
            if out is None:
                raise typer.BadParameter("--out is required (unless --explain)")
            report = filter_samples(inp, out, r.filter, r.export, skip_bad_lines=skip_bad_lines, progress=progress,
                                    eval_cfg=r.eval, shard=parse_shard(shard))
    except _user_errors() as e:
        _fail(e)
    from rich.table import Table

    t = Table(title=f"distill filter: {report['kept']} of {report['total']} kept")
    for col in ("check", "evaluated", "failed", "rejected here", "seconds"):
        t.add_column(col, justify="left" if col == "check" else "right")
    for c in report["order"]:
        x = report["checks"][c]
        t.add_row(c if x["enabled"] else f"{c} (off)", str(x["evaluated"]), str(x["failed"]), str(x["first_reason"]),
                  f"{x['seconds']:.2f}")
    console.print(t)
    if report["bad_lines_skipped"]:
        console.print(f"[yellow]{report['bad_lines_skipped']} malformed line(s) skipped[/]: {report['bad_lines'][0]}")
    if report.get("undecided"):
        from distill.filter import UNDECIDED_NOTE

        console.print("[yellow]" + UNDECIDED_NOTE.format(n=report["undecided"]).replace("**", "") + "[/]")
    for src, h in report.get("gold_health", {}).items():
        if h["unparseable"]:
            ex = "; ".join(f"{e['problem_id']}: {e['gold']!r}" for e in h["examples"][:3])
            console.print(f"[yellow]warning:[/] {src}: {h['unparseable']} of {h['problems']} gold answers do not parse, "
                          f"so no sample of those problems can pass `correct` (e.g. {ex}); fix the answer field "
                          "or problems.fields.answer_pattern")
    if report.get("verdicts_reused"):
        console.print(f"{report['verdicts_reused']} verdict(s) reused from an earlier run of this output directory, "
                      f"{report['verdicts_judged']} judged now")
    console.print(f"outputs in {out}: kept.jsonl, rejected.jsonl, {Path(report['outputs']['train']).name}, "
                  "report.json, report.md"
                  + (f" (shard {report['shard']}: join the shards with `distill filter --merge ... --out DIR`)"
                     if report.get("shard") else ""))


@app.command()
def topup(
    out: Annotated[Path, typer.Option("--out", "-o", help="Sample store directory (created or resumed).")],
    filtered: Annotated[Path, typer.Option("--filtered", help="The filter's output directory (its verdicts are reused).")],
    recipe: RecipeOpt = None,
    set_: SetOpt = None,
    shard: Annotated[str | None, typer.Option(help="i/N: this node's slice of the problems.")] = None,
    progress: Annotated[bool, typer.Option(help="Show the progress bars.")] = True,
    unsafe_no_sandbox: UnsafeOpt = False,
) -> None:
    """Generate and filter in rounds until each problem has topup.k kept (or correct) samples or topup.max_samples
    samples exist. Resumable: a rerun continues where it stopped, and generates nothing once done."""
    from distill.config import load_recipe
    from distill.data import parse_shard
    from distill.topup import FILE
    from distill.topup import topup as run

    try:
        r = load_recipe(recipe, _unsafe(set_, unsafe_no_sandbox, "filter.correct.code.unsafe_no_sandbox"))
        res = run(r, out, filtered, shard=parse_shard(shard), progress=progress)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted:[/] the samples and verdicts so far are kept; rerun the same command to resume")
        raise typer.Exit(130) from None
    except _user_errors() as e:
        _fail(e)
    from rich.table import Table

    t = Table(title=f"distill topup: {res['reached_k']} of {res['problems']} problems have k={res['k']} {res['count']}")
    for col in ("round", "generated", "tokens", "samples", "kept", "reached k", "at max", "seconds"):
        t.add_column(col, justify="right")
    for x in res["rounds"]:
        t.add_row(*(str(x[k]) for k in ("round", "generated", "tokens", "samples", "kept", "reached_k", "at_most",
                                        "seconds")))
    console.print(t)
    console.print(f"{res['at_most']} problem(s) stopped at {res['max_samples']} samples; {res['generated']} samples "
                  f"({res['tokens']} tokens) generated in all. Store: {out}; filter outputs and {FILE}: {filtered}")
    if res["failed"]:
        console.print(f"[yellow]{res['failed']} request(s) failed for good[/]: rerun the same command to retry them")
        raise typer.Exit(3)


def _print_explain(sample: dict, verdict: dict) -> None:
    from rich.table import Table

    from distill.verify.checks import ORDER

    console.print(f"sample {sample['key']}  problem {sample['problem_id']}  answer {sample['answer']!r}")
    console.print(f"completion: {sample['completion'][:300]!r}{' ...' if len(sample['completion']) > 300 else ''}")
    t = Table(title="kept" if verdict["kept"] else f"rejected: {verdict['reject_reason']}")
    for col in ("check", "pass", "value"):
        t.add_column(col)
    for c in ORDER:
        p = verdict[c]["pass"]
        t.add_row(c, {True: "[green]pass[/]", False: "[red]FAIL[/]", None: "-"}[p],
                  json.dumps(verdict[c]["value"], ensure_ascii=False)[:400])
    console.print(t)


@app.command()
def train(
    recipe: RecipeOpt = None,
    set_: SetOpt = None,
    data: Annotated[Path | None, typer.Option("--data", "-d", help="Output directory of `distill filter` (or its train.jsonl).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where the student and its checkpoints go.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Preflight only: show one rendered example and its loss mask.")] = False,
    resume: Annotated[bool, typer.Option(help="Resume from the last checkpoint in --out when there is one.")] = True,
) -> None:
    """SFT a student on filtered traces (TRL SFTTrainer; LoRA/QLoRA via PEFT; multi-GPU via accelerate launch)."""
    from distill.config import load_recipe
    from distill.train.examples import PreflightError, TrainDataError
    from distill.train.sft import train as run

    try:
        r = load_recipe(recipe, set_)
        if r.train.method == "dpo":
            from distill.train.dpo import train_dpo

            if dry_run or not (out or r.train.output_dir):
                raise TrainDataError("train.method dpo: pass --out DIR (no --dry-run for DPO yet)")
            d = train_dpo(r, data, out or r.train.output_dir, resume=resume)
            if int(os.environ.get("RANK", "0")) == 0:
                console.print(f"DPO: {d['pairs']} pairs, {d['steps']} steps, reward margin {d['first_margin']} -> "
                              f"{d['final_margin']}; student: {d['out']}   log: {d['out']}/train_summary.json, "
                              "margins.png")
            return
        summary = run(r, data=data, out=out, dry_run=dry_run, resume=resume)
    except (*_user_errors(), PreflightError, TrainDataError) as e:
        _fail(e)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    console.print(summary.table())
    if dry_run:
        console.print("preflight passed; nothing was trained (--dry-run)")
    else:
        console.print(f"student: {summary.out}   loss curve: {summary.out}/loss.png   log: {summary.out}/train_summary.json")


class _LazyTeacher:
    """A teacher loaded on first use and shared by the benchmarks of a suite."""

    def __init__(self, recipe, model: str, backend: str | None):
        cfg = recipe.teacher.model_copy(update={"model": model, **({"backend": backend} if backend else {})})
        self._cfg, self._teacher = cfg, None

    def __getattr__(self, name):
        if self._teacher is None:
            from distill.teachers import load_teacher

            with console.status(f"loading {self._cfg.model} ({self._cfg.backend})"):
                self._teacher = load_teacher(self._cfg)
        return getattr(self._teacher, name)

    def close(self) -> None:
        if self._teacher is not None:
            self._teacher.close()


@app.command("eval")
def eval_(
    model: Annotated[str | None, typer.Option("--model", "-m", help="The student: a local HF directory, .gguf, hub id, or 'embedded'.")] = None,
    benchmark: Annotated[str | None, typer.Option("--benchmark", "-b", help="math500, aime24, aime25, amc23, gsm8k, gpqa_diamond, livecodebench, humaneval, mbpp, a JSONL file, or a dataset id.")] = None,
    k: Annotated[int | None, typer.Option("--k", min=1, help="Samples per problem (default: the protocol's for the benchmark, else eval.k, 4).")] = None,
    backend: Annotated[str | None, typer.Option(help="hf, vllm or openai (default: the recipe's teacher.backend).")] = None,
    recipe: RecipeOpt = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory (default: runs/eval/<model>-<benchmark>-k<k>).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N problems (a smoke run).")] = None,
    protocol: Annotated[str | None, typer.Option(help="A named preset of prompt, sampling and k per benchmark: r1 (the R1 report's).")] = None,
    suite: Annotated[str | None, typer.Option(help="A set of benchmarks with a report in the R1 report's Table 5 shape: r1 (AIME 2024, MATH-500, GPQA Diamond, LiveCodeBench; protocol r1 unless --protocol).")] = None,
    shard: Annotated[str | None, typer.Option(help="i/N: generate only this slice of the problems (one per GPU or node), then rerun without --shard to score.")] = None,
    compare: Annotated[tuple[Path, Path] | None, typer.Option("--compare", help="Two eval.json files (or their directories): a - b, paired.")] = None,
    progress: Annotated[bool, typer.Option(help="Show the progress bars.")] = True,
    unsafe_no_sandbox: UnsafeOpt = False,
) -> None:
    """Evaluate a student by the R1 protocol: pass@1 over k samples, cons@k, pass@k, bootstrap intervals over problems.

    Code benchmarks (humaneval, mbpp, livecodebench) run each sample's code against the tests in the sandbox."""
    from distill.config import load_recipe
    from distill.data import parse_shard
    from distill.evaluate import EvalError, compare_table, default_out, evaluate, load, student_prompt
    from distill.evaluate import compare as run_compare
    from distill.suite import SuiteError, apply_protocol, report
    from distill.suite import suite as suite_benchmarks

    try:
        if compare:
            r = load_recipe(recipe, set_)
            c = run_compare(compare[0], compare[1], r.eval.bootstrap, r.eval.confidence, r.eval.seed)
            for w in c["warnings"]:
                console.print(f"[yellow]warning:[/] {w}")
            console.print(compare_table(c))
            console.print("a - b in bold where the interval excludes 0")
            return
        if not model or not (benchmark or suite):
            raise typer.BadParameter("give --model and --benchmark (or --suite; or --compare A B)")
        if benchmark and suite:
            raise typer.BadParameter("give --benchmark or --suite, not both")
        sets = _unsafe(set_, unsafe_no_sandbox, "filter.correct.code.unsafe_no_sandbox")
        if limit is not None:
            sets.append(f"eval.limit={limit}")
        r = load_recipe(recipe, sets)
        explicit = {x.split("=", 1)[0].strip() for x in sets}
        benches = suite_benchmarks(suite) if suite else [benchmark]
        proto = protocol or r.eval.protocol or ("r1" if suite else None)
        if proto is None and recipe is None and not any(x.startswith("prompt.") for x in sets):
            trained = student_prompt(model)
            if trained:  # evaluate with the prompt the student was trained on, not a default
                r.prompt = type(r.prompt).model_validate(trained)
                console.print(f"[dim]prompt: {trained['template']} (from {model}/train_summary.json)[/]")
        part = parse_shard(shard)
        if len(benches) > 1:
            from distill.evaluate import check_loadable

            check_loadable(benches, r.eval)
        # One teacher for every benchmark of a suite, loaded when a benchmark first has samples to
        # generate (a vLLM engine start is minutes; a rerun that only rescores loads nothing).
        shared = _LazyTeacher(r, model, backend) if len(benches) > 1 else None
        root = out or Path(str(default_out(model, f"suite-{suite or ''}", 0)).removesuffix("-k0"))
        results, wheres = {}, {}
        for b in benches:
            rb, kb, record = apply_protocol(r, proto, b, explicit, k) if proto else (r, k or r.eval.k, None)
            where = (root / b) if suite else (out or default_out(model, b, kb))
            wheres[b] = where
            if len(benches) > 1:
                console.print(f"[bold]{b}[/] ({kb} samples a problem) -> {where}")
            res = evaluate(rb, model, b, where, k=kb, backend=backend, progress=progress, protocol=record, shard=part,
                           teacher=shared)
            if res is not None:
                results[b] = res
                console.print(res.table())
    except (*_user_errors(), EvalError, SuiteError) as e:
        _fail(e)
    finally:
        if "shared" in locals() and shared is not None:
            shared.close()
    if part is not None:
        console.print(f"shard {shard} generated; when every shard is done, run the same command without --shard to score")
        return
    if suite:
        doc = report(model, {b: load(wheres[b]) for b in benches}, root, r.eval.confidence)
        console.print(f"report: {root}/report.md   {root}/report.json   plot: {root}/report.png"
                      + ("" if doc["published"] else "   (no published row: not one of the six R1 students)"))
        return
    console.print(f"every sample and verdict: {wheres[benches[0]]}/eval.json   plot: {wheres[benches[0]]}/eval.png")


@app.command()
def grpo(
    recipe: RecipeOpt = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where the policy and its checkpoints go.")] = None,
    resume: Annotated[bool, typer.Option(help="Resume from the last checkpoint in --out when there is one.")] = True,
    unsafe_no_sandbox: UnsafeOpt = False,
) -> None:
    """Train a student by GRPO (TRL GRPOTrainer) with the filter's verifier as reward (`code`: tests in the sandbox)."""
    from distill.config import load_recipe
    from distill.train.examples import PreflightError, TrainDataError
    from distill.train.grpo import train_grpo

    try:
        r = load_recipe(recipe, _unsafe(set_, unsafe_no_sandbox, "grpo.code.unsafe_no_sandbox"))
        summary = train_grpo(r, out=out, resume=resume)
    except (*_user_errors(), PreflightError, TrainDataError) as e:
        _fail(e)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    console.print(summary.table())
    console.print(f"policy: {summary.out}   rewards: {summary.out}/rewards.png   log: {summary.out}/grpo_summary.json")


@app.command()
def onpolicy(
    recipe: RecipeOpt = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Where the student and its checkpoints go.")] = None,
    resume: Annotated[bool, typer.Option(help="Resume from the last checkpoint in --out when there is one.")] = True,
    check: Annotated[bool, typer.Option("--check", help="Run the preflight only (vocabulary, context, memory: "
                                                      "configs and tokenizers, no weights) and exit.")] = False,
    unsafe_no_sandbox: UnsafeOpt = False,
) -> None:
    """On-policy distillation (TRL DistillationTrainer): the student samples, the teacher scores every token.

    The loss is reverse KL(student || teacher) at onpolicy.beta 1; the verifier scores the student's samples
    for the log only. A pair that cannot work (vocabulary, context, memory) is refused before weights load."""
    from distill.config import load_recipe
    from distill.train.examples import PreflightError, TrainDataError
    from distill.train.onpolicy import GB, preflight, train_onpolicy

    try:
        r = load_recipe(recipe, _unsafe(set_, unsafe_no_sandbox, "onpolicy.code.unsafe_no_sandbox"))
        if check:
            pair, _ = preflight(r)
            m = pair.memory
            console.print(f"ok: student {pair.student_params / 1e6:.0f}M and teacher {pair.teacher_params / 1e6:.0f}M "
                          f"parameters share a vocabulary of {pair.vocab_size} ids (tokenizer of the "
                          f"{pair.tokenizer_from}); context {pair.context}; weights + optimizer "
                          f"{m['total'] / GB:.1f} GB of {m['available'] / GB:.1f} GB {m['where']}")
            return
        summary = train_onpolicy(r, out=out, resume=resume)
    except (*_user_errors(), PreflightError, TrainDataError) as e:
        _fail(e)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    console.print(summary.table())
    console.print(f"student: {summary.out}   plot: {summary.out}/onpolicy.png   log: {summary.out}/train_summary.json")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        raise SystemExit(130) from None
    except Exception as e:
        # A full, read-only or forbidden disk, wherever it surfaced: one line with the file and the fix (a
        # message of ours in the chain first: it says what was kept), never chained tracebacks.
        from distill.fs import describe, disk_error

        disk = disk_error(e)
        if disk is None:
            raise
        ours = next((x for x in _chain(e) if isinstance(x, _user_errors())), None)
        console.print(f"[bold red]error:[/] {ours if ours is not None else describe(disk)}")
        raise SystemExit(2) from None


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


if __name__ == "__main__":
    main()
