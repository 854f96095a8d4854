"""`trainsvc sweep ...`: submit a sweep, follow it with one progress bar, read its leaderboard."""

from __future__ import annotations

import argparse
import json
from typing import Any, TextIO

from tqdm import tqdm

from trainsvc_client.cli import (
    STATUSES,
    Progress,
    TrainsvcError,
    command_adder,
    cost_text,
    dump,
    fmt,
    fmt_time,
    listed,
    positive,
    print_fields,
    read_json,
    show,
    stopped_watching,
    table,
    write_file,
)
from trainsvc_client.client import Client, Json

# While following a sweep, read it at most this often (its event stream says when to look).
POLL_SECONDS = 1.0


# -- formatting -------------------------------------------------------------------------------


def param_text(value: Any) -> str:
    """A searched value, short: an object with a type as `sgd(learning_rate=0.01)`."""
    if isinstance(value, dict):
        inner = ", ".join(f"{k}={param_text(v)}" for k, v in value.items() if k != "type")
        return f"{value['type']}({inner})" if "type" in value else "{" + inner + "}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str | int | bool) or value is None:
        return fmt(value)
    return json.dumps(value, separators=(",", ":"))


def params_text(params: Json | None) -> str:
    """A trial's parameters as `path=value` pairs."""
    return " ".join(f"{path}={param_text(value)}" for path, value in (params or {}).items()) or "-"


def objective_name(sweep: Json) -> str:
    objective = sweep.get("objective")
    if isinstance(objective, dict) and objective.get("metric"):
        return str(objective["metric"])
    return "objective"


def progress_text(sweep: Json) -> str:
    progress = sweep.get("progress") or {}
    return f"{progress.get('finished') or 0}/{progress.get('total') or '?'} trials"


def best_text(sweep: Json) -> str:
    best = sweep.get("best")
    if not best:
        return "-"
    return f"{objective_name(sweep)} {fmt(best.get('value'))} ({params_text(best.get('params'))})"


def print_leaderboard(sweep: Json, out: TextIO) -> None:
    """The trials, best first: rank, job, status (pruned: the pruner stopped it), objective,
    validation accuracy, epochs run, seconds, parameters."""
    rows = [
        (
            rank,
            row.get("job_id"),
            "pruned" if (row.get("error") or {}).get("code") == "pruned" else row.get("status"),
            row.get("objective"),
            (row.get("metrics") or {}).get("val_accuracy"),
            row.get("epochs"),
            f"{row['seconds']:.1f}" if isinstance(row.get("seconds"), int | float) else None,
            params_text(row.get("params")),
        )
        for rank, row in enumerate(sweep.get("leaderboard") or [], start=1)
    ]
    name = objective_name(sweep)
    headers = ("#", "job", "status", name, "val_acc", "epochs", "seconds", "params")
    table(headers, rows, out, right=f"#,{name},val_acc,epochs,seconds")


def print_sweep(sweep: Json, out: TextIO) -> None:
    """A sweep's fields, then its leaderboard."""
    best = sweep.get("best") or {}
    rows = [
        ("id", sweep["id"]),
        ("name", sweep.get("name")),
        ("status", sweep["status"]),
        ("progress", progress_text(sweep)),
        ("best", best_text(sweep)),
        ("best job", best.get("job_id")),
        ("best model", best.get("model_id")),
    ]
    if sweep.get("created_at"):
        rows.append(("created", fmt_time(sweep.get("created_at"))))
    error = sweep.get("error")
    if error:
        rows.append(("error", f"{error.get('code')}: {error.get('message')}"))
    print_fields(rows, out)
    if sweep.get("leaderboard"):
        print(file=out)
        print_leaderboard(sweep, out)


def print_dry_run(plan: Json, out: TextIO) -> None:
    """What a sweep would run: its trials (grid) or its space, the largest network, the cost."""
    trials = plan.get("trials")
    print(f"{plan.get('strategy') or 'sweep'}: {plan.get('total', '?')} trial(s)", file=out)
    if isinstance(trials, list):
        rows = [(i, params_text(t)) for i, t in enumerate(trials, start=1)]
        table(("#", "params"), rows, out, right="#")
    elif isinstance(plan.get("space"), dict):
        for path, dimension in plan["space"].items():
            print(f"  {path}: {json.dumps(dimension)}", file=out)
    largest = plan.get("largest")
    if isinstance(largest, dict) and largest.get("total_params") is not None:
        print(
            f"largest network: {largest['total_params']:,} params "
            f"({params_text(largest.get('params'))})",
            file=out,
        )
    if plan.get("cost"):
        print(f"cost: {cost_text(plan['cost'])}", file=out)


# -- live progress ----------------------------------------------------------------------------


class SweepProgress(Progress):
    """One tqdm bar for a whole sweep: trials finished of the total, the best value so far."""

    def __call__(self, sweep: Json) -> None:
        progress = sweep.get("progress") or {}
        if sweep["status"] != self.status and sweep["status"] not in ("succeeded", "failed"):
            self.status = sweep["status"]
            self.write(f"sweep {sweep['id']} {sweep['status']}")
        if self.bar is None:
            self.bar = tqdm(
                total=progress.get("total") or None,
                unit="trial",
                desc=sweep.get("name") or "sweep",
                file=self.file,
                dynamic_ncols=True,
                mininterval=0.2,
                bar_format="{desc}: {n_fmt}/{total_fmt} trials |{bar}| {elapsed}<{remaining}"
                "{postfix}",
            )
        best = sweep.get("best")
        if best and best.get("value") is not None:
            self.bar.set_postfix({"best " + objective_name(sweep): fmt(best["value"])}, False)
        finished = int(progress.get("finished") or 0)
        if finished < self.bar.n:
            self.bar.reset(total=self.bar.total)
        self.bar.update(finished - self.bar.n)


def follow_sweep(client: Client, sweep_id: str, as_json: bool, out: TextIO, err: TextIO) -> int:
    """Show a sweep's progress until it ends; exit 0 only if it succeeded."""
    progress = SweepProgress(err)
    try:
        sweep = client.wait_sweep(sweep_id, on_progress=progress, poll_interval=POLL_SECONDS)
    except KeyboardInterrupt:
        return stopped_watching("sweep", sweep_id, progress, err)
    finally:
        progress.close()
    show(sweep, as_json, print_sweep, out)
    return 0 if sweep["status"] == "succeeded" else 1


# -- commands ---------------------------------------------------------------------------------


def cmd_submit(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    request = read_json(args.file, "sweep")
    if not isinstance(request, dict):
        raise TrainsvcError(f"{args.file}: a sweep request is a JSON object")
    if args.name:
        request["name"] = args.name
    if args.dry_run:
        return show(client.submit_sweep(request, dry_run=True), args.json, print_dry_run, out)
    sweep = client.submit_sweep(request, idempotency_key=args.idempotency_key)
    if args.wait:
        print(f"submitted sweep {sweep['id']}", file=err, flush=True)
        return follow_sweep(client, sweep["id"], args.json, out, err)
    if args.json:
        dump(sweep, out)
    else:
        print(
            f"submitted sweep {sweep['id']} ({sweep['status']}, {progress_text(sweep)})", file=out
        )
        print(f"follow it with: trainsvc sweep wait {sweep['id']}", file=out)
    return 0


def cmd_wait(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return follow_sweep(client, args.sweep_id, args.json, out, err)


def cmd_status(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return show(client.sweep(args.sweep_id), args.json, print_sweep, out)


def cmd_list(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    sweeps = listed(
        client.iter_sweeps(status=args.status, page_size=min(args.limit, 100)), "sweeps", args, out
    )
    if not sweeps:
        return 0
    rows = [
        (
            s["id"],
            s.get("name"),
            s["status"],
            progress_text(s).removesuffix(" trials"),
            (s.get("best") or {}).get("value"),
            fmt_time(s.get("created_at")),
        )
        for s in sweeps
    ]
    table(("id", "name", "status", "trials", "best", "created (UTC)"), rows, out, right="best")
    return 0


def cmd_cancel(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    sweep = client.cancel_sweep(args.sweep_id)
    if args.json:
        dump(sweep, out)
    elif sweep["status"] == "cancelled":
        print(f"sweep {sweep['id']} cancelled ({progress_text(sweep)} finished)", file=out)
    else:
        print(
            f"sweep {sweep['id']} is {sweep['status']}: its running trials stop after their "
            "current epoch",
            file=out,
        )
    return 0


def cmd_plot(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return write_file(client.sweep_plot(args.sweep_id), args.output or f"{args.sweep_id}.png", out)


def add_commands(
    commands: Any, connection: argparse.ArgumentParser, as_json: argparse.ArgumentParser
) -> None:
    """Add `sweep` and its subcommands to the `trainsvc` parser's subcommands."""
    sweep = commands.add_parser(
        "sweep",
        help="run and follow sweeps (many trials of one spec)",
        description="Submit a sweep (many trials of one spec), follow it, read its leaderboard.",
    )
    sweep_commands = sweep.add_subparsers(dest="sweep_command", required=True, metavar="COMMAND")

    add = command_adder(sweep_commands, connection, as_json)
    submit = add("submit", cmd_submit, "submit a sweep request (a JSON file, or - for stdin)")
    submit.add_argument("file", help="the sweep request: name, spec, space, strategy, ...")
    submit.add_argument("--wait", action="store_true", help="follow it with one progress bar")
    submit.add_argument("--name", help="override the sweep's name")
    submit.add_argument(
        "--dry-run", action="store_true", help="validate and list the trials or the space only"
    )
    submit.add_argument("--idempotency-key", help="resubmitting with this key creates no new sweep")
    add("wait", cmd_wait, "follow a sweep until it ends (one progress bar)").add_argument(
        "sweep_id"
    )
    add("status", cmd_status, "show a sweep and its leaderboard").add_argument("sweep_id")
    listing = add("list", cmd_list, "list sweeps, newest first")
    listing.add_argument("--status", choices=STATUSES, help="only sweeps with this status")
    listing.add_argument("--limit", type=positive, default=20, help="at most this many (20)")
    add("cancel", cmd_cancel, "cancel a sweep and its unfinished trials").add_argument("sweep_id")
    plot = add("plot", cmd_plot, "save a sweep's overlaid curves as PNG", json_flag=False)
    plot.add_argument("sweep_id")
    plot.add_argument("-o", "--output", help="the file to write (default ID.png; - for stdout)")
