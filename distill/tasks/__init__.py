"""Built-in verifiable tasks, generated offline from a seed (no download, exact answers)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from distill.tasks import arithmetic, countdown

# name -> (options model, generator)
TASKS = {
    "arithmetic": (arithmetic.ArithmeticOptions, arithmetic.generate),
    "countdown": (countdown.CountdownOptions, countdown.generate),
}


def generate_task(name: str, count: int, seed: int, options: dict[str, Any] | None = None):
    if name not in TASKS:
        raise ValueError(f"problems.task: unknown task {name!r}; built-in tasks: {', '.join(TASKS)}")
    model, gen = TASKS[name]
    try:
        opts = model.model_validate(options or {})
    except ValidationError as e:
        details = "; ".join(f"{'.'.join(map(str, x['loc'])) or 'options'}: {x['msg']}" for x in e.errors())
        raise ValueError(
            f"problems.task_options for task {name!r}: {details}. Known options: {', '.join(model.model_fields)}"
        ) from None
    return gen(count, seed, opts)
