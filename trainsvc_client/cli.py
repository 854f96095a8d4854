"""`trainsvc`: submit and follow training jobs, read their metrics, ask their models."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any, Protocol, TextIO

from tqdm import tqdm

from trainsvc_client.client import DEFAULT_URL, TERMINAL, ApiError, Client, Json, TrainsvcError

DEV_KEY_FILE = Path("var") / "dev-api-key"
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
SHORT_NAMES = {"accuracy": "acc", "val_accuracy": "val_acc"}
METRIC_ORDER = ("loss", "accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy")

EPILOG = f"""\
The service URL comes from --url, else $TRAINSVC_URL, else {DEFAULT_URL}.
The API key comes from --api-key, else $TRAINSVC_API_KEY, else the file ./{DEV_KEY_FILE}
(the development key `make run` writes) when it exists.
Exit status: 0 success; 1 an error, or a waited-for job or sweep that failed or was
cancelled; 2 bad usage; 130 when Ctrl-C stops watching (the job or sweep keeps running).
"""


class UsageError(Exception):
    """A command line that parses but cannot be acted on (exit status 2)."""


# -- formatting -------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    """A value for a table cell: floats to 4 significant digits, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:#.4g}"
    return str(value)


def fmt_time(value: str | None) -> str:
    """An ISO timestamp as 'YYYY-MM-DD HH:MM:SS' (UTC), or '-'."""
    return "-" if not value else value[:19].replace("T", " ")


def table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO, right: str = ""
) -> None:
    """Print rows under headers in columns; those named in `right` are right-aligned."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    flush_right = [h in right.split(",") for h in headers]
    for row in [list(headers), *cells]:
        line = "  ".join(
            c.rjust(w) if r else c.ljust(w)
            for c, w, r in zip(row, widths, flush_right, strict=True)
        )
        print(line.rstrip(), file=out)


def print_fields(rows: Sequence[tuple[str, Any]], out: TextIO) -> None:
    """Print 'name  value' lines with the values aligned."""
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {fmt(value)}", file=out)


def dump(value: Any, out: TextIO) -> None:
    print(json.dumps(value, indent=2), file=out)


def metrics_line(metrics: Json) -> str:
    """'loss 0.51  accuracy 0.8' for the known metrics present, in a fixed order."""
    parts = [f"{name} {fmt(metrics[name])}" for name in METRIC_ORDER if name in metrics]
    return "  ".join(parts) or "-"


def duration(job: Json) -> float | None:
    """Seconds from start to finish, when the job has both."""
    if not job.get("started_at") or not job.get("finished_at"):
        return None
    started = datetime.fromisoformat(job["started_at"])
    finished = datetime.fromisoformat(job["finished_at"])
    return (finished - started).total_seconds()


def print_job(job: Json, out: TextIO) -> None:
    """A job as aligned 'field  value' lines."""
    progress = job.get("progress") or {}
    error = job.get("error")
    rows = [
        ("id", job["id"]),
        ("name", job.get("name")),
        ("status", job["status"] + (" (cancel requested)" if _cancelling(job) else "")),
        ("engine", job.get("engine")),
        ("progress", f"epoch {progress.get('epoch') or 0}/{progress.get('epochs') or '?'}"),
        ("created", fmt_time(job.get("created_at"))),
        ("started", fmt_time(job.get("started_at"))),
        ("finished", fmt_time(job.get("finished_at"))),
        ("attempts", job.get("attempts")),
        ("metrics", metrics_line(job.get("metrics") or {})),
        ("model", job.get("model_id")),
    ]
    if job.get("resumed_from_epoch"):
        rows.insert(-2, ("resumed", f"from the checkpoint after epoch {job['resumed_from_epoch']}"))
    if error:
        rows.append(("error", f"{error.get('code')}: {error.get('message')}"))
    training = job.get("training") or {}
    if training.get("stop_reason"):
        rows.append(
            ("stopped", f"{training['stop_reason']} at epoch {training.get('stopped_epoch')}")
        )
    print_fields(rows, out)


def _cancelling(job: Json) -> bool:
    return bool(job.get("cancel_requested")) and job["status"] in ("queued", "running")


# -- live progress ----------------------------------------------------------------------------


class Progress:
    """A tqdm bar on `file` (made on first use), with messages printed above it."""

    def __init__(self, file: TextIO) -> None:
        self.file = file
        self.bar: tqdm[Any] | None = None
        self.status: str | None = None

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=self.file)
        else:
            print(message, file=self.file, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EpochProgress(Progress):
    """A tqdm bar fed by a job's status and epoch events."""

    def __init__(self, file: TextIO) -> None:
        super().__init__(file)
        self.job: Json | None = None

    def on_status(self, job: Json) -> None:
        """Note a status change above the bar."""
        self.job = job
        state = f"{job['status']}/{job.get('attempts')}"
        if state != self.status and job["status"] not in TERMINAL:  # the summary says how it ended
            self.status = state
            attempt = f" (attempt {job['attempts']})" if job.get("attempts", 0) > 1 else ""
            if job.get("resumed_from_epoch"):
                attempt += f", resumed after epoch {job['resumed_from_epoch']}"
            self.write(f"job {job['id']} {job['status']}{attempt}")
        if job["status"] == "running":
            self._ensure_bar()

    def on_epoch(self, row: Json) -> None:
        """Move the bar to this epoch and show its metrics."""
        bar = self._ensure_bar()
        epoch = int(row["epoch"])
        if epoch < bar.n:  # a new attempt replays its epochs from the first
            bar.reset(total=bar.total)
        shown = {
            SHORT_NAMES.get(name, name): fmt(row[name])
            for name in ("loss", "accuracy", "val_loss", "val_accuracy")
            if row.get(name) is not None
        }
        bar.set_postfix(shown, refresh=False)
        bar.update(epoch - bar.n)  # redraws at most every `mininterval`

    def _ensure_bar(self) -> tqdm[Any]:
        if self.bar is None:
            # The stream replays every recorded epoch, so the bar starts from zero.
            progress = (self.job or {}).get("progress") or {}
            self.bar = tqdm(
                total=progress.get("epochs") or None,
                unit="epoch",
                desc=(self.job or {}).get("name") or "training",
                file=self.file,
                dynamic_ncols=True,
                mininterval=0.2,
                # No rate: epochs recorded before we connected arrive all at once.
                bar_format="{desc}: {n_fmt}/{total_fmt} |{bar}| {elapsed}<{remaining}{postfix}",
            )
        return self.bar


def follow(client: Client, job_id: str, as_json: bool, out: TextIO, err: TextIO) -> int:
    """Show a job's progress until it finishes; exit 0 only if it succeeded."""
    progress = EpochProgress(err)
    try:
        job = client.wait(job_id, on_epoch=progress.on_epoch, on_status=progress.on_status)
    except KeyboardInterrupt:
        return stopped_watching("job", job_id, progress, err)
    finally:
        progress.close()
    show(job, as_json, print_summary, out)
    return 0 if job["status"] == "succeeded" else 1


def stopped_watching(kind: str, ident: str, progress: Progress, err: TextIO) -> int:
    """After Ctrl-C while following a job or sweep: say how to go on; exit status 130."""
    progress.close()
    command = "trainsvc " if kind == "job" else f"trainsvc {kind} "
    print(
        f"\nstopped watching; {kind} {ident} keeps running.\n"
        f"  follow it again: {command}wait {ident}\n"
        f"  stop it:         {command}cancel {ident}",
        file=err,
    )
    return 130


def print_summary(job: Json, out: TextIO) -> None:
    """The final lines after waiting: status and time, test metrics, model id or error."""
    seconds = duration(job)
    progress = job.get("progress") or {}
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    print(
        f"job {job['id']} {job['status']}{took} after {progress.get('epoch') or 0} epoch(s)",
        file=out,
    )
    metrics = job.get("metrics") or {}
    tests = [
        f"{name} {fmt(metrics['test_' + name])}"
        for name in ("loss", "accuracy")
        if "test_" + name in metrics
    ]
    if tests:
        print("test  " + "  ".join(tests), file=out)
    if job.get("model_id"):
        print(f"model {job['model_id']}", file=out)
    if job.get("error"):
        print(f"error {job['error'].get('code')}: {job['error'].get('message')}", file=out)


# -- commands ---------------------------------------------------------------------------------


def read_json(source: str, what: str) -> Any:
    """JSON from a file path, or from stdin when `source` is '-'."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise TrainsvcError(f"cannot read {what} {source}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = "stdin" if source == "-" else source
        raise TrainsvcError(f"{where} is not valid JSON: {exc}") from None


def cmd_submit(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    spec = read_json(args.spec, "spec")
    if not isinstance(spec, dict):
        raise TrainsvcError(f"{args.spec}: a job spec is a JSON object")
    if args.engine:
        spec["engine"] = args.engine
    if args.name:
        spec["name"] = args.name
    if args.dataset:
        spec["dataset"] = {"dataset_id": args.dataset}
    if args.dry_run:
        return show(client.submit(spec, dry_run=True), args.json, print_summary_table, out)
    job = client.submit(spec, idempotency_key=args.idempotency_key)
    if args.wait:
        print(f"submitted job {job['id']}", file=err, flush=True)
        return follow(client, job["id"], args.json, out, err)
    if args.json:
        dump(job, out)
    else:
        print(f"submitted job {job['id']} ({job['status']})", file=out)
        print(f"follow it with: trainsvc wait {job['id']}", file=out)
    return 0


def print_summary_table(summary: Json, out: TextIO) -> None:
    """A dry run's model summary, laid out like Keras's model.summary()."""
    print(
        f"task {summary.get('task')}, input shape {tuple(summary.get('input_shape') or ())}",
        file=out,
    )
    rows = [
        (layer["name"], layer["type"], str(tuple(layer["output_shape"])), f"{layer['params']:,}")
        for layer in summary.get("layers", [])
    ]
    table(("layer", "type", "output shape", "params"), rows, out, right="params")
    print(
        f"total params: {summary['total_params']:,}  "
        f"(trainable {summary['trainable_params']:,}, "
        f"non-trainable {summary['non_trainable_params']:,})",
        file=out,
    )
    cost = summary.get("cost")
    if cost:
        print(f"cost: {cost_text(cost)}", file=out)


def cost_text(cost: Json) -> str:
    """A job's cost in one line: operations, data and (when known) the time estimate."""
    seconds = cost.get("estimated_seconds")
    estimate = (
        f"about {fmt_seconds(seconds)} of training at the workers' measured speed"
        if seconds is not None
        else "no time estimate yet (no worker has measured its speed)"
    )
    return (
        f"{cost['flops']:.3g} FLOP ({cost['flops_per_epoch']:.3g} per epoch), "
        f"{cost['data_bytes'] / 2**20:.3g} MiB of data; {estimate}"
    )


def fmt_seconds(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"


def cmd_wait(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return follow(client, args.job_id, args.json, out, err)


def show(value: Any, as_json: bool, printer: Callable[[Any, TextIO], None], out: TextIO) -> int:
    """Print `value` as JSON or with its human-readable printer."""
    if as_json:
        dump(value, out)
    else:
        printer(value, out)
    return 0


def cmd_status(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return show(client.job(args.job_id), args.json, print_job, out)


def listed(items: Iterable[Json], what: str, args: argparse.Namespace, out: TextIO) -> list[Json]:
    """The first --limit items (all without one) for a table; empty when there is nothing left
    to print (they were printed as JSON, or there are none and that was said)."""
    found = list(islice(items, args.limit))
    if args.json:
        dump(found, out)
        return []
    status = getattr(args, "status", None)
    if not found:
        print(f"no {what}" + (f" with status {status}" if status else ""), file=out)
    return found


def cmd_list(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    jobs = listed(
        client.iter_jobs(status=args.status, page_size=min(args.limit, 100)), "jobs", args, out
    )
    if not jobs:
        return 0
    rows = []
    for job in jobs:
        progress = job.get("progress") or {}
        metrics = job.get("metrics") or {}
        accuracy = metrics.get("test_accuracy", metrics.get("val_accuracy"))
        rows.append(
            (
                job["id"],
                job.get("name"),
                job["status"] + ("*" if _cancelling(job) else ""),
                job.get("engine"),
                f"{progress.get('epoch') or 0}/{progress.get('epochs') or '?'}",
                accuracy,
                fmt_time(job.get("created_at")),
            )
        )
    table(("id", "name", "status", "engine", "epoch", "accuracy", "created (UTC)"), rows, out)
    return 0


def cmd_metrics(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    result = client.metrics(args.job_id)
    if args.json:
        dump(result, out)
        return 0
    history = result.get("history") or []
    if not history:
        print(f"no epochs recorded yet for job {args.job_id}", file=out)
        return 0
    names = [n for n in ("loss", "accuracy", "val_loss", "val_accuracy") if n in history[0]]
    rows = [
        [row["epoch"], *(_fixed(row.get(n), 4) for n in names), _fixed(row.get("seconds"), 3)]
        for row in history
    ]
    headers = ("epoch", *names, "seconds")
    table(headers, rows, out, right=",".join(headers))
    return 0


def _fixed(value: Any, places: int) -> str:
    return f"{value:.{places}f}" if isinstance(value, int | float) else fmt(value)


def cmd_model(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.model_id == "export":
        return cmd_model_export(client, args, out, err)
    if args.export_id is not None or args.format is not None or args.output is not None:
        raise UsageError("to export a model: trainsvc model export ID --format onnx|npz -o FILE")
    model = client.model(args.model_id)
    if args.json:
        dump(model, out)
        return 0
    rows = [
        ("id", model["id"]),
        ("job", model.get("job_id")),
        ("engine", model.get("engine")),
        ("task", model.get("task")),
        ("features", model.get("n_features")),
        ("classes", ", ".join(map(str, model["classes"])) if model.get("classes") else None),
        ("params", model.get("params")),
        ("metrics", metrics_line(model.get("metrics") or {})),
        ("evaluation", evaluation_line(model.get("evaluation"))),
    ]
    print_fields(rows, out)
    return 0


def evaluation_line(evaluation: Json | None) -> str | None:
    """The test-split evaluation in one line (None for models trained before evaluations)."""
    if not evaluation:
        return None
    names: tuple[tuple[str, str], ...]
    if evaluation.get("task") == "classification":
        names = (
            ("accuracy", "accuracy"),
            ("macro_f1", "macro F1"),
            ("roc_auc", "ROC AUC"),
            ("log_loss", "log loss"),
        )
    else:
        names = (("mae", "MAE"), ("rmse", "RMSE"), ("r2", "R²"))
    parts = [f"{label} {_fixed(evaluation.get(key), 4)}" for key, label in names]
    return f"{', '.join(parts)} (test split, {evaluation.get('n_samples')} rows)"


def cmd_model_export(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """`trainsvc model export ID --format onnx|npz -o FILE`."""
    if args.export_id is None:
        raise UsageError("which model? trainsvc model export ID --format onnx|npz -o FILE")
    fmt = args.format or "onnx"
    data = client.export(args.export_id, fmt)
    return write_file(data, args.output or f"model-{args.export_id}.{fmt}", out)


def write_file(data: bytes, target: str, out: TextIO) -> int:
    """Write downloaded bytes to `target` (- for stdout) and say so."""
    if target == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    try:
        Path(target).write_bytes(data)
    except OSError as exc:
        raise TrainsvcError(f"cannot write {target}: {exc.strerror}") from None
    print(f"wrote {target} ({len(data):,} bytes)", file=out)
    return 0


def instances_from(args: argparse.Namespace) -> list[Any]:
    """The rows to predict, from --instances, --file or stdin; one flat row is allowed."""
    given = [s for s in (args.instances, args.file, args.source) if s is not None]
    if len(given) != 1:
        raise UsageError("give the instances once: --instances JSON, --file FILE, or - for stdin")
    if args.instances is not None:
        try:
            value = json.loads(args.instances)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--instances is not valid JSON: {exc}") from None
    else:
        value = read_json(args.file if args.file is not None else "-", "instances")
    if isinstance(value, dict) and "instances" in value:
        value = value["instances"]
    if isinstance(value, list) and value and not isinstance(value[0], list):
        value = [value]
    if not isinstance(value, list):
        raise TrainsvcError("instances are a JSON list of rows: [[x1, x2, ...], ...]")
    return value


def cmd_predict(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return show(
        client.predict(args.model_id, instances_from(args)), args.json, print_predictions, out
    )


def print_predictions(result: Json, out: TextIO) -> None:
    """One line per row: the prediction (and the top class's probability)."""
    predictions = result["predictions"]
    probabilities = result.get("probabilities")
    rows: list[tuple[Any, ...]]
    if probabilities is not None:
        rows = [
            (i, label, max(probs))
            for i, (label, probs) in enumerate(zip(predictions, probabilities, strict=True))
        ]
        table(("row", "prediction", "probability"), rows, out)
    else:
        rows = [(i, json.dumps(p) if isinstance(p, list) else p) for i, p in enumerate(predictions)]
        table(("row", "prediction"), rows, out)


def cmd_cancel(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    job = client.cancel(args.job_id)
    if args.json:
        dump(job, out)
    elif job["status"] == "cancelled":
        print(f"job {job['id']} cancelled", file=out)
    else:
        print(f"job {job['id']} is {job['status']}: it stops after its current epoch", file=out)
    return 0


def cmd_plot(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return write_file(client.plot(args.job_id), args.output or f"{args.job_id}.png", out)


def print_dataset(dataset: Json, out: TextIO) -> None:
    counts = dataset.get("label_counts")
    rows = [
        ("id", dataset["id"]),
        ("name", dataset.get("name")),
        ("rows", dataset.get("rows")),
        ("label", dataset.get("label")),
        ("features", ", ".join(dataset.get("features") or [])),
        ("labels", ", ".join(f"{k}: {v}" for k, v in counts.items()) if counts else None),
        ("bytes", dataset.get("bytes")),
        ("created", fmt_time(dataset.get("created_at"))),
    ]
    print_fields(rows, out)


def cmd_datasets_upload(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        dataset = client.upload_dataset(args.file, args.label, name=args.name)
    except OSError as exc:
        raise TrainsvcError(f"cannot read {args.file}: {exc.strerror}") from None
    if args.json:
        dump(dataset, out)
    else:
        print_dataset(dataset, out)
        print(f'use it in a spec as "dataset": {{"dataset_id": "{dataset["id"]}"}}', file=out)
    return 0


def cmd_datasets_list(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    items = listed(client.datasets(limit=args.limit)["items"], "datasets", args, out)
    if items:
        rows = [
            (
                d["id"],
                d.get("name"),
                d.get("rows"),
                len(d.get("features") or []),
                d.get("label"),
                fmt_time(d.get("created_at")),
            )
            for d in items
        ]
        table(("id", "name", "rows", "features", "label", "created (UTC)"), rows, out)
    return 0


def cmd_datasets_show(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return show(client.dataset(args.dataset_id), args.json, print_dataset, out)


# -- the model registry -----------------------------------------------------------------------


def print_registered(model: Json, out: TextIO) -> None:
    aliases = ", ".join(f"{a['alias']} -> v{a['version']}" for a in model.get("aliases") or [])
    rows = [
        ("name", model["name"]),
        ("description", model.get("description")),
        ("latest version", model.get("latest_version")),
        ("aliases", aliases or None),
        ("updated", fmt_time(model.get("updated_at"))),
    ]
    print_fields(rows, out)


def print_versions(versions: list[Json], out: TextIO) -> None:
    rows = [
        (f"v{v['version']}", v["model_id"], ", ".join(v["aliases"]), fmt_time(v["created_at"]))
        for v in versions
    ]
    table(("version", "model", "aliases", "registered (UTC)"), rows, out)


def cmd_registry_create(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return show(
        client.register_model(args.name, args.description), args.json, print_registered, out
    )


def cmd_registry_list(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    page = client.registered_models(limit=args.limit)["items"]
    items = listed(page, "registered models", args, out)
    if items:
        rows = [
            (
                m["name"],
                m.get("latest_version"),
                ", ".join(f"{a['alias']}=v{a['version']}" for a in m["aliases"]),
                fmt_time(m.get("updated_at")),
            )
            for m in items
        ]
        table(("name", "latest", "aliases", "updated (UTC)"), rows, out)
    return 0


def cmd_registry_show(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    model = client.registered_model(args.name)
    versions = client.versions(args.name)
    if args.json:
        dump({**model, "versions": versions}, out)
        return 0
    print_registered(model, out)
    if versions:
        print(file=out)
        print_versions(versions, out)
    return 0


def cmd_registry_add(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Register a model as the name's next version (creating the name if asked)."""
    if args.create:
        try:
            client.registered_model(args.name)
        except ApiError as exc:
            if exc.status != 404:
                raise
            client.register_model(args.name)
    version = client.add_version(args.name, args.model_id)
    if args.alias:
        client.set_alias(args.name, args.alias, version["version"])
        version["aliases"] = [*version["aliases"], args.alias]
    if args.json:
        dump(version, out)
    else:
        print(f"{args.name} v{version['version']} = model {version['model_id']}", file=out)
        if args.alias:
            print(f"{args.alias} -> v{version['version']}", file=out)
    return 0


def cmd_registry_alias(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    return show(
        client.set_alias(args.name, args.alias, args.version), args.json, print_registered, out
    )


def cmd_registry_unalias(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    client.delete_alias(args.name, args.alias)
    print(f"deleted alias {args.alias} of {args.name}", file=out)
    return 0


def cmd_registry_delete(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.version is not None:
        client.delete_version(args.name, args.version)
        print(f"deleted {args.name} v{args.version}", file=out)
    else:
        client.delete_registered_model(args.name)
        print(f"deleted {args.name}", file=out)
    return 0


def cmd_registry_history(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    items = client.registry_history(args.name, limit=args.limit)["items"]
    if args.json:
        dump(items, out)
        return 0
    rows = [
        (
            fmt_time(e["at"]),
            e["action"],
            " ".join(f"{k}={fmt(v)}" for k, v in e["details"].items()),
            f"{e['tenant']} ({e['key_prefix']}…)" if e.get("key_prefix") else e["tenant"],
        )
        for e in items
    ]
    table(("when (UTC)", "action", "details", "who"), rows, out)
    return 0


def cmd_registry_predict(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    name, _, alias = args.target.partition("@")
    if alias and args.version is not None:
        raise UsageError("give NAME@ALIAS or --version, not both")
    result = client.predict_registered(
        name, instances_from(args), alias=alias or None, version=args.version
    )
    return show(result, args.json, print_predictions, out)


# -- argument parsing -------------------------------------------------------------------------

Command = Callable[[Client, argparse.Namespace, TextIO, TextIO], int]


class AddCommand(Protocol):
    def __call__(
        self, name: str, func: Command, help: str, json_flag: bool = True
    ) -> argparse.ArgumentParser: ...


def command_adder(
    commands: Any, connection: argparse.ArgumentParser, as_json: argparse.ArgumentParser
) -> AddCommand:
    """A function adding one subcommand to `commands` (an argparse subparsers action): its help,
    its function, the connection options and (unless json_flag is false) --json."""

    def add(name: str, func: Command, help: str, json_flag: bool = True) -> argparse.ArgumentParser:
        parents = [connection, as_json] if json_flag else [connection]
        sub: argparse.ArgumentParser = commands.add_parser(
            name, help=help, description=help, parents=parents
        )
        sub.set_defaults(func=func)
        return sub

    return add


def build_parser() -> argparse.ArgumentParser:
    """The `trainsvc` argument parser; global options may come before or after the command."""
    connection = argparse.ArgumentParser(add_help=False)
    group = connection.add_argument_group("connection")
    group.add_argument("--url", default=argparse.SUPPRESS, help="service URL")
    group.add_argument("--api-key", default=argparse.SUPPRESS, help="API key")
    group.add_argument(
        "--timeout", type=float, default=argparse.SUPPRESS, help="seconds per request (30)"
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print machine-readable JSON")

    parser = argparse.ArgumentParser(
        prog="trainsvc",
        description="Command-line client for the trainsvc model-training service.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[connection],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add = command_adder(commands, connection, as_json)
    submit = add("submit", cmd_submit, "submit a job spec (a JSON file, or - for stdin)")
    submit.add_argument("spec", help="the job spec file")
    submit.add_argument("--wait", action="store_true", help="follow the job with a progress bar")
    submit.add_argument("--engine", choices=("numpy", "keras"), help="override the spec's engine")
    submit.add_argument("--name", help="override the spec's name")
    submit.add_argument("--dataset", metavar="ID", help="train on this uploaded dataset")
    submit.add_argument("--dry-run", action="store_true", help="validate and show the model only")
    submit.add_argument("--idempotency-key", help="resubmitting with this key creates no new job")

    wait = add("wait", cmd_wait, "follow a job until it finishes (a progress bar per epoch)")
    wait.add_argument("job_id")

    add("status", cmd_status, "show a job").add_argument("job_id")

    listing = add("list", cmd_list, "list jobs, newest first")
    listing.add_argument("--status", choices=STATUSES, help="only jobs with this status")
    listing.add_argument("--limit", type=positive, default=20, help="at most this many (20)")

    add("metrics", cmd_metrics, "a job's per-epoch metrics").add_argument("job_id")
    model = add(
        "model",
        cmd_model,
        "show a model; or export it: model export ID --format onnx|npz -o FILE",
    )
    model.add_argument("model_id", metavar="ID", help="the model (or `export`, then its ID)")
    model.add_argument("export_id", nargs="?", metavar="EXPORT_ID", help=argparse.SUPPRESS)
    model.add_argument(
        "--format",
        choices=("onnx", "npz"),
        help="export: onnx (an ONNX graph, opset 17) or npz (the stored artifact); default onnx",
    )
    model.add_argument(
        "-o", "--output", help="export: the file to write (default model-ID.FORMAT; - for stdout)"
    )

    predict = add("predict", cmd_predict, "predict with a model")
    predict.add_argument("model_id")
    predict.add_argument(
        "source", nargs="?", choices=["-"], help="- reads the instances from stdin"
    )
    predict.add_argument("--instances", help="the rows as JSON: [[x1, x2, ...], ...]")
    predict.add_argument("--file", help='a JSON file with the rows (or {"instances": rows})')

    add("cancel", cmd_cancel, "cancel a job").add_argument("job_id")

    plot = add("plot", cmd_plot, "save a job's learning curves as PNG", json_flag=False)
    plot.add_argument("job_id")
    plot.add_argument("-o", "--output", help="the file to write (default ID.png; - for stdout)")

    datasets = commands.add_parser("datasets", help="upload and list CSV datasets")
    dataset_commands = datasets.add_subparsers(
        dest="datasets_command", required=True, metavar="COMMAND"
    )

    add_dataset = command_adder(dataset_commands, connection, as_json)
    upload = add_dataset("upload", cmd_datasets_upload, "upload a CSV file with a header row")
    upload.add_argument("file")
    upload.add_argument("--label", required=True, help="the column to predict")
    upload.add_argument("--name", help="the dataset's name (default: the file name)")
    dataset_list = add_dataset("list", cmd_datasets_list, "list datasets, newest first")
    dataset_list.add_argument("--limit", type=positive, default=None, help="at most this many")
    add_dataset("show", cmd_datasets_show, "show a dataset").add_argument("dataset_id")
    add_registry_commands(commands, connection, as_json)

    from trainsvc_client import sweep_cli  # it builds on this module's helpers

    sweep_cli.add_commands(commands, connection, as_json)
    return parser


def add_registry_commands(
    commands: Any, connection: argparse.ArgumentParser, as_json: argparse.ArgumentParser
) -> None:
    """`trainsvc registry ...`: named models, versions and aliases."""
    registry = commands.add_parser("registry", help="the model registry: names, versions, aliases")
    registry_commands = registry.add_subparsers(
        dest="registry_command", required=True, metavar="COMMAND"
    )

    add = command_adder(registry_commands, connection, as_json)
    create = add("create", cmd_registry_create, "create a registered model name")
    create.add_argument("name")
    create.add_argument("--description")
    add("list", cmd_registry_list, "list registered models").add_argument(
        "--limit", type=positive, default=None, help="at most this many"
    )
    add("show", cmd_registry_show, "show a registered model and its versions").add_argument("name")
    register = add("add", cmd_registry_add, "add a trained model as the name's next version")
    register.add_argument("name")
    register.add_argument("model_id")
    register.add_argument("--alias", help="then point this alias at it (e.g. production)")
    register.add_argument("--create", action="store_true", help="create the name if it is new")
    alias = add("alias", cmd_registry_alias, "point an alias at a version (create or move)")
    alias.add_argument("name")
    alias.add_argument("alias")
    alias.add_argument("version", type=positive)
    unalias = add("unalias", cmd_registry_unalias, "delete an alias")
    unalias.add_argument("name")
    unalias.add_argument("alias")
    delete = add("delete", cmd_registry_delete, "delete a registered model, or one version")
    delete.add_argument("name")
    delete.add_argument("--version", type=positive, help="delete only this version")
    history = add("history", cmd_registry_history, "every change: what, who, when")
    history.add_argument("name")
    history.add_argument("--limit", type=positive, default=None)
    predict = add("predict", cmd_registry_predict, "predict with NAME@ALIAS or NAME --version N")
    predict.add_argument("target", metavar="NAME[@ALIAS]", help="default alias: production")
    predict.add_argument("--version", type=positive)
    predict.add_argument("source", nargs="?", choices=["-"], help="- reads the rows from stdin")
    predict.add_argument("--instances", help="the rows as JSON: [[x1, x2, ...], ...]")
    predict.add_argument("--file", help='a JSON file with the rows (or {"instances": rows})')


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def resolve_api_key(given: str | None) -> tuple[str | None, str]:
    """The API key and where it came from: --api-key, $TRAINSVC_API_KEY, ./var/dev-api-key."""
    if given:
        return given, "--api-key"
    if os.environ.get("TRAINSVC_API_KEY"):
        return os.environ["TRAINSVC_API_KEY"], "$TRAINSVC_API_KEY"
    try:
        key = DEV_KEY_FILE.read_text().strip()
    except OSError:
        return None, "none"
    return (key, str(DEV_KEY_FILE)) if key else (None, "none")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `trainsvc` command and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    key, source = resolve_api_key(getattr(args, "api_key", None))
    out, err = sys.stdout, sys.stderr
    try:
        client = Client(getattr(args, "url", None), key, getattr(args, "timeout", 30.0))
        func: Command = args.func
        return func(client, args, out, err)
    except UsageError as exc:
        parser.exit(2, f"trainsvc: error: {exc}\n")
    except ApiError as exc:
        message = str(exc)
        if exc.status == 401 and key is None:
            message += (
                f"; no API key: pass --api-key, set TRAINSVC_API_KEY, or run where "
                f"./{DEV_KEY_FILE} exists"
            )
        elif exc.status == 401:
            message += f"; the key from {source} was refused"
        print(f"trainsvc: error: {message}", file=err)
    except (TrainsvcError, ValueError) as exc:
        print(f"trainsvc: error: {exc}", file=err)
    except KeyboardInterrupt:
        print("trainsvc: interrupted", file=err)
        return 130
    except BrokenPipeError:
        return 1
    return 1


if __name__ == "__main__":
    sys.exit(main())
