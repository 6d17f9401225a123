"""Kept samples → training examples, the loss mask, and the preflight that checks both.

One function turns a chat example into `input_ids` and `labels` (-100 on everything the student
must not learn to write). The trainer trains on exactly what it returns, and the preflight inspects
exactly what it returns, before any weights are loaded.

Why not TRL's own tokenization: it happens inside `SFTTrainer.__init__`, after the model is loaded
(minutes and hundreds of GB for a 70B student), so a broken template would only show after that, or
never (TRL warns once and trains anyway). The masking rule is TRL's prompt/completion rule: the
prompt is rendered with the generation prompt, the conversation without it, and the loss starts
where their token ids diverge. TRL then packs and collates the pre-tokenized columns as usual.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from distill.prompts import Prompt, PromptError, build_prompt, render

# Plain ChatML (Qwen2.5's turn markup without its default system prompt), for tokenizers that ship
# no template. Their vocabulary must hold <|im_start|> and <|im_end|> as special tokens.
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class TrainDataError(ValueError):
    """Training data or a chat template the trainer cannot use; the message names the file, the record and the fix."""


class PreflightError(ValueError):
    """The loss mask or the template would train the wrong thing; the message says what and the fix."""


# ----------------------------------------------------------------------------------------------
# reading


def find_data(path: str | Path) -> Path:
    """A filter output directory (its train.jsonl / train.parquet) or a file."""
    p = Path(path)
    if p.is_dir():
        for name in ("train.jsonl", "train.parquet"):
            if (p / name).is_file():
                return p / name
        raise TrainDataError(f"{p}: no train.jsonl or train.parquet here; give the output directory of "
                             "`distill filter` (it writes train.jsonl) or a JSONL/Parquet file of chat examples")
    if not p.is_file():
        raise TrainDataError(f"{p}: no such file or directory; run `distill filter ... --out DIR` first, then --data DIR")
    return p


def read_examples(path: str | Path) -> list[dict]:
    """Rows with `messages` (the filter's export) or conversational `prompt` + `completion`."""
    p = find_data(path)
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(p).to_pylist()
        wheres = [f"{p} row {i + 1}" for i in range(len(rows))]
    else:
        rows, wheres = [], []
        with p.open("rb") as f:
            for lineno, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                where = f"{p} line {lineno}"
                try:
                    rec = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise TrainDataError(f"{where}: not valid JSON ({e}); fix or delete the line") from None
                rows.append(rec)
                wheres.append(where)
    if not rows:
        raise TrainDataError(f"{p}: no examples (did the filter keep nothing? see report.md beside it)")
    out = []
    for rec, where in zip(rows, wheres, strict=False):
        prompt, completion = split_messages(rec, where)
        out.append({"prompt": prompt, "completion": completion, "problem": rec.get("problem"), "kind": rec.get("kind"), "where": where})
    return out


def split_messages(rec, where: str) -> tuple[list[dict], list[dict]]:
    """(prompt messages, [the assistant message]) from one record; errors name the record."""
    if not isinstance(rec, dict):
        raise TrainDataError(f"{where}: expected a JSON object with `messages`")
    if "messages" in rec:
        msgs = rec["messages"]
        _check_messages(msgs, where, "messages")
        if msgs[-1]["role"] != "assistant":
            raise TrainDataError(f"{where}: the last message must be the assistant's answer (role 'assistant'), "
                                 f"got role {msgs[-1]['role']!r}")
        prompt, completion = msgs[:-1], msgs[-1:]
    elif "prompt" in rec and "completion" in rec:
        prompt, completion = rec["prompt"], rec["completion"]
        _check_messages(prompt, where, "prompt")
        _check_messages(completion, where, "completion")
    else:
        raise TrainDataError(f"{where}: no `messages` field (keys: {', '.join(map(str, rec)) or 'none'}); "
                             "expected the filter's export {\"messages\": [user..., assistant]} "
                             "or conversational {\"prompt\": [...], \"completion\": [...]}")
    if not any(m["role"] == "user" for m in prompt):
        raise TrainDataError(f"{where}: no user message before the assistant's answer")
    return prompt, completion


def _check_messages(msgs, where: str, name: str) -> None:
    if not isinstance(msgs, list) or not msgs:
        raise TrainDataError(f"{where}: `{name}` must be a non-empty list of {{role, content}} messages")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise TrainDataError(f"{where}: {name}[{i}] must be {{\"role\": str, \"content\": str}}, got {m!r:.120}")


# ----------------------------------------------------------------------------------------------
# templates and tokenization


def apply_template(tokenizer, chat_template: str | None, where: str = "the recipe") -> None:
    """Set the recipe's template on the tokenizer (saved with the student, so eval renders the same)."""
    if chat_template is None:
        if not getattr(tokenizer, "chat_template", None):
            raise PreflightError(
                f"the student's tokenizer ({tokenizer.name_or_path}) has no chat template and {where} names none; "
                "set train.chat_template: chatml (or a path to a .jinja file), or use an instruct checkpoint")
        return
    if chat_template == "chatml":
        tokenizer.chat_template = CHATML
        return
    p = Path(chat_template)
    if not p.is_file():
        raise PreflightError(f"train.chat_template: {chat_template!r} is neither 'chatml' nor an existing .jinja file")
    tokenizer.chat_template = p.read_text()


def _render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)


def _ids(tokenizer, text: str) -> list[int]:
    # The template already wrote any BOS; add_special_tokens=True would add a second one.
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def tokenize(tokenizer, prompt: list[dict], completion: list[dict]) -> dict:
    prompt_ids = _ids(tokenizer, _render(tokenizer, prompt, True))
    ids = _ids(tokenizer, _render(tokenizer, prompt + completion, False))
    n = 0
    for a, b in zip(prompt_ids, ids, strict=False):
        if a != b:
            break
        n += 1
    return {"input_ids": ids, "labels": [-100] * n + ids[n:], "prompt_tokens": len(prompt_ids), "shared_prefix": n}


def end_of_turn(tokenizer) -> tuple[int | None, str]:
    """The token the template closes an assistant turn with (<|im_end|>, <|eot_id|>, ...): the student
    must learn to write it, and generation must stop on it."""
    probe = "DISTILLPROBE"
    text = _render(tokenizer, [{"role": "user", "content": "q"}, {"role": "assistant", "content": probe}], False)
    after = text.split(probe, 1)[1] if probe in text else ""
    ids = _ids(tokenizer, after.lstrip(" ")) if after.strip() else []
    if not ids:
        return None, after
    return ids[0], tokenizer.convert_ids_to_tokens(ids[0])


# ----------------------------------------------------------------------------------------------
# preflight


@dataclass
class Preflight:
    example: dict  # the example shown
    tokens: list[str]
    trained: list[bool]
    eot_id: int | None
    eot_token: str
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (name, ok, detail)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    def failures(self) -> list[str]:
        return [f"{name}: {detail}" for name, ok, detail in self.checks if not ok]


def eval_prefill(prompt_cfg) -> tuple[str, bool]:
    """What evaluation appends after the generation prompt, and whether it renders without a template."""
    p = build_prompt("x", prompt_cfg)
    return p.prefill, p.raw


def preflight(tokenizer, example: dict, tok: dict, prompt_cfg) -> Preflight:
    """Check one tokenized example against the rules a distilled student needs."""
    ids, labels = tok["input_ids"], tok["labels"]
    trained = [lab != -100 for lab in labels]
    eot_id, eot_token = end_of_turn(tokenizer)
    pf = Preflight(example, tokenizer.convert_ids_to_tokens(ids), trained, eot_id, eot_token)
    answer = example["completion"][-1]["content"]
    trained_text = tokenizer.decode([i for i, t in zip(ids, trained, strict=False) if t])
    full_text = _render(tokenizer, example["prompt"] + example["completion"], False)

    # 1. The reasoning is in the rendered text and carries loss.
    if "</think>" in answer:
        reasoning = answer.split("</think>", 1)[0].replace("<think>", "").strip()
        probe = reasoning[:60]
        if probe and probe not in full_text:
            pf.checks.append(("reasoning trained", False,
                              "the chat template drops the reasoning from the assistant turn (as DeepSeek-R1-Distill's "
                              "template does with everything before </think>): the student would learn answers "
                              "without thinking. Set train.chat_template to one that keeps it (chatml, or a .jinja file)"))
        elif probe and probe not in trained_text or "</think>" not in trained_text:
            pf.checks.append(("reasoning trained", False,
                              "the loss mask misses the <think> content; the prompt rendering swallows part of the answer"))
        else:
            pf.checks.append(("reasoning trained", True, f"{sum(trained)} of {len(ids)} tokens carry loss, "
                                                          "including the whole <think> block and the answer"))
    else:
        pf.warnings.append(f"{example['where']}: the answer has no </think>; the student learns no reasoning block here")

    # 2. The prompt carries no loss.
    user = next((m["content"] for m in example["prompt"] if m["role"] == "user"), "")
    prompt_leak = bool(user.strip()) and user.strip()[:60] in trained_text
    pf.checks.append(("prompt masked", not prompt_leak,
                      f"{tok['shared_prefix']} prompt tokens masked" if not prompt_leak else
                      "the user's text carries loss; the template renders the prompt differently with and without "
                      "the generation prompt"))

    # 3. The end-of-turn token exists, is trained, and is one token.
    if eot_id is None:
        pf.checks.append(("end of turn trained", False,
                          "the chat template closes the assistant turn with nothing, so the student never learns to "
                          "stop (it generates until max_tokens). Use a template that ends turns with a token "
                          "(train.chat_template: chatml)"))
    else:
        hit = any(t and i == eot_id for i, t in zip(ids, trained, strict=False))
        pf.checks.append(("end of turn trained", hit,
                          f"{eot_token!r} (id {eot_id}) carries loss" if hit else
                          f"{eot_token!r} (id {eot_id}) closes the turn but carries no loss: the student would not "
                          "learn to stop"))
        if eot_id not in getattr(tokenizer, "all_special_ids", []):
            pf.warnings.append(f"{eot_token!r} is not a special token of this tokenizer; it may be split or merged "
                               "with neighbouring text, and the student may not learn to stop cleanly")

    # 4. Training renders the prompt exactly as evaluation will (generation prompt + prefill).
    prefill, raw = eval_prefill(prompt_cfg)
    if raw:
        pf.checks.append(("same prompt as eval", False,
                          "prompt.template r1-zero sends raw text without the chat template, but the student is "
                          "trained through its chat template; evaluate with prompt.template r1 or plain"))
    else:
        try:
            eval_text = render(tokenizer, Prompt(example["prompt"], prefill=prefill))
        except PromptError as e:
            raise PreflightError(str(e)) from None
        same = full_text.startswith(eval_text)
        if same:
            detail = "the training text starts with the evaluation prompt" + (
                f" and its prefill {prefill!r}" if prefill else "")
        else:
            k = next((i for i, (a, b) in enumerate(zip(full_text, eval_text, strict=False)) if a != b), min(len(full_text), len(eval_text)))
            detail = (f"at character {k} training has {full_text[k:k + 40]!r} where evaluation sends {eval_text[k:k + 40]!r}. "
                      "The template or prefill renders the start of the answer differently (e.g. a generation prompt that "
                      "already opens <think> plus a <think> in the answer). Align prompt.force_think with the template, "
                      "or set train.chat_template")
        pf.checks.append(("same prompt as eval", same, detail))
    if tok["shared_prefix"] < tok["prompt_tokens"]:
        pf.warnings.append("the tokenized prompt is not a prefix of the tokenized conversation (tokens merge across "
                           "the boundary); the loss starts where they diverge")
    # A code problem's prompt is built from its tests, which the export does not carry (`kind` says it is one).
    if example.get("problem") and not example.get("kind"):
        want = build_prompt(example["problem"], prompt_cfg).messages
        if [m["content"] for m in want] != [m["content"] for m in example["prompt"]]:
            pf.warnings.append("the training prompts are worded differently from what the recipe's `prompt` section "
                               "sends at evaluation; the student may answer differently there")
    return pf


def show(pf: Preflight, console, max_tokens: int = 400) -> None:
    """The example token by token: trained tokens in green, masked ones dim."""
    from rich.table import Table
    from rich.text import Text

    text = Text()
    n = len(pf.tokens)
    keep = set(range(n)) if n <= max_tokens else set(range(max_tokens // 2)) | set(range(n - max_tokens // 2, n))
    skipped = False
    for i, (t, on) in enumerate(zip(pf.tokens, pf.trained, strict=False)):
        if i not in keep:
            if not skipped:
                text.append(f" … {n - len(keep)} tokens … ", style="bold")
                skipped = True
            continue
        t = t.replace("Ġ", " ").replace("Ċ", "\n").replace("▁", " ")
        text.append(t, style="green" if on else "dim")
    console.print(f"[bold]preflight[/] — {pf.example['where']} through the student's chat template "
                  "([green]green[/]: carries loss, [dim]dim[/]: masked)")
    console.print(text)
    t = Table("check", "ok", "detail", show_lines=False)
    for name, ok, detail in pf.checks:
        t.add_row(name, "[green]yes[/]" if ok else "[red]NO[/]", detail)
    console.print(t)
    for w in pf.warnings:
        console.print(f"[yellow]warning:[/] {w}")
