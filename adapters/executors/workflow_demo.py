"""Demo callables of the workflow patterns (``examples/workflows.toml``, ``docs/patterns.md``):
a coder that writes code, a fan-out that spawns children and waits for them, a task that
reports progress, and a one-at-a-time agent whose state is carried in the log (each step
takes the previous step's result as its input ``previous``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from execution_ledger.adapters.executors.task_context import TaskContext


def write_code(args: dict[str, Any]) -> dict[str, Any]:
    """The coder: ``{"module": M, "source": ..., "lines": N}``."""
    module = str(args["module"])
    source = f"def {module}():\n    return 42\n"
    return {"module": module, "source": source, "lines": source.count("\n")}


def fan_out(args: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Spawn one ``square`` child per number in ``numbers`` and wait for them all (the
    parent's result is then ``{"result": <this>, "children": [<their results>]}``)."""
    for n in args.get("numbers", []):
        context.spawn("square", {"n": n})
    context.wait_for_children(on_child_failure=args.get("on_child_failure", "fail"))
    return {"spawned": len(args.get("numbers", []))}


def square(args: dict[str, Any]) -> dict[str, Any]:
    """``{"square": n * n}``; fails for a negative ``n``."""
    n = args["n"]
    if n < 0:
        raise ValueError(f"no square for a negative number ({n})")
    return {"square": n * n}


def report_progress(args: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Report ``fraction`` with ``message``, then wait (at most ``seconds``) for the file
    ``until`` to exist: a test sees the progress while the task still runs."""
    context.progress(float(args.get("fraction", 0.5)), args.get("message"))
    until = Path(str(args["until"]))
    deadline = time.monotonic() + float(args.get("seconds", 30))
    while not until.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return {"done": until.exists()}


def agent_step(args: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """One step of an agent: its state is the previous step's result (input ``previous``),
    never process memory; the new state is this step's result."""
    previous = context.inputs.get("previous")
    state = dict(previous["result"]) if previous else {"agent_id": args["agent_id"], "turns": []}
    message = str(args["message"])
    turns = [*state["turns"], message]
    return {
        "agent_id": state["agent_id"],
        "turns": turns,
        "reply": f"turn {len(turns)}: heard {message!r} after {len(turns) - 1} before",
    }


def inputs_of(args: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Return the inputs the task was given (its dependencies' results, by name)."""
    return dict(context.inputs)


def nest(args: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Spawn one ``nest`` child with ``levels - 1`` until 0, each waiting for its child."""
    levels = int(args["levels"])
    if levels > 0:
        context.spawn(str(args.get("type", "nest")), {"levels": levels - 1})
        context.wait_for_children()
    return {"levels": levels}


def spawn_one(args: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    """Spawn one child of type ``child`` with ``child_args`` and wait for it."""
    context.spawn(str(args["child"]), dict(args.get("child_args", {})))
    context.wait_for_children(on_child_failure=args.get("on_child_failure", "fail"))
    return {"child": args["child"]}
