"""`rhub`, the one entry point. One function per command; long commands live in their own modules.

Expected problems (a bad config, a store from a newer version) exit with status 2 and a one-line
message per problem on stderr, never a traceback: `RhubGroup.invoke` catches them for every command.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from . import __version__
from .config import ConfigError, HubConfig, load_config, render_template
from .log import setup_logging
from .sync.store import StoreError

DEFAULT_CONFIG = "hub.yaml"
EXIT_USAGE = 2  # configuration and usage problems, as click uses for bad options


class RhubGroup(click.Group):
    """A click group that turns ConfigError/StoreError from any command into exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ConfigError, StoreError) as exc:
            click.echo(f"error: {exc}" if "\n" not in str(exc) else f"error:\n{exc}", err=True)
            ctx.exit(EXIT_USAGE)


def config_option(func: Any) -> Any:
    """`--config/-c PATH` (default hub.yaml, or $RHUB_CONFIG) for commands that read the config."""
    return click.option("--config", "-c", "config_path", default=DEFAULT_CONFIG, envvar="RHUB_CONFIG",
                        show_default=True, type=click.Path(dir_okay=False, path_type=Path),
                        help="The hub configuration file.")(func)


@click.group(cls=RhubGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="rhub")
@click.option("--log-json", is_flag=True, help="Log JSON lines on stderr (for log shippers).")
@click.option("--verbose", "-v", is_flag=True, help="Log debug detail.")
@click.pass_context
def main(ctx: click.Context, log_json: bool, verbose: bool) -> None:
    """Retention Hub: sync CRM, support, billing and usage data; score churn risk; write back to the CRM."""
    setup_logging(json=log_json, level=logging.DEBUG if verbose else logging.INFO)
    ctx.obj = {"log_json": log_json, "verbose": verbose}


@main.command()
@click.option("--out", "-o", default=DEFAULT_CONFIG, show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="Where to write the template.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(out: Path, force: bool) -> None:
    """Write a commented hub.yaml template to start from."""
    if out.exists() and not force:
        click.echo(f"error: {out} already exists; use --force to overwrite it", err=True)
        raise click.exceptions.Exit(EXIT_USAGE)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_template(), encoding="utf-8")
    click.echo(f"Wrote {out}. Set the environment variables it references (or an env_file), "
               f"edit it, then run: rhub validate --config {out}")


@main.command()
@config_option
def validate(config_path: Path) -> None:
    """Check the configuration and summarise it (secrets are never shown)."""
    config = load_config(config_path)
    click.echo(f"{config_path}: valid")
    for label, text in summarize(config):
        click.echo(f"  {label:<10} {text}")


def summarize(config: HubConfig) -> list[tuple[str, str]]:
    """(label, text) lines describing what `config` sets up, without any secret value."""
    out = [("store", config.store.safe_url)]
    sources = config.sources
    described = []
    if sources.salesforce:
        auth = sources.salesforce.auth
        how = "access token" if auth.access_token else f"OAuth {auth.grant}"
        described.append(("salesforce", f"{sources.salesforce.instance_url}, {how}, API "
                                        f"v{sources.salesforce.api_version}"))
    if sources.hubspot:
        described.append(("hubspot", f"{sources.hubspot.base_url}, access token"))
    if sources.zendesk:
        described.append(("zendesk", f"{sources.zendesk.url} as {sources.zendesk.email}, API token"))
    if sources.stripe:
        described.append(("stripe", f"{sources.stripe.base_url}, API key"))
    if sources.usage:
        usage = sources.usage
        where = str(usage.path) if usage.path else "database URL"
        described.append(("usage", f"{usage.kind} {where}, table {usage.table}"))
    enabled = sources.enabled()
    for name, text in described:
        out.append(("source", f"{name}: {text}" + ("" if name in enabled else " (disabled)")))
    for name in ("salesforce", "hubspot"):
        target = getattr(config.targets, name)
        if target is not None:
            tasks = f"tasks by {target.tasks.owner}" if target.tasks.enabled else "no tasks"
            state = "" if target.enabled else " (disabled)"
            out.append(("target", f"{name}: {len(target.field_mappings)} fields, conflict policy "
                                  f"{target.conflict_policy}, {tasks}{state}"))
    if config.targets.salesforce is None and config.targets.hubspot is None:
        out.append(("target", "none (scores are computed but not written back)"))
    scoring = config.scoring
    cards = ", ".join(f"{c.name} ({len(c.components)} components"
                      + (f", {c.segment.field} in {c.segment.values}" if c.segment else "") + ")"
                      for c in scoring.scorecards)
    out.append(("scoring", f"horizon {scoring.horizon_days} days, green >= {scoring.tiers.green:g}, "
                           f"yellow >= {scoring.tiers.yellow:g}; scorecards: {cards}"))
    out.append(("playbooks", ", ".join(p.name for p in config.playbooks) or "none"))
    jobs = config.schedules.jobs()
    out.append(("schedules", "; ".join(
        f"{name} " + (f"every {s.interval_minutes} min" if s.interval_minutes else f"'{s.cron}'")
        for name, s in jobs.items()) + f" ({config.schedules.timezone})" if jobs else "none"))
    identity = config.identity
    out.append(("identity", f"auto-accept >= {identity.auto_accept:g}, review >= {identity.review_threshold:g}"
                            + (f", overrides {identity.overrides_file}" if identity.overrides_file else "")))
    return out


@main.group()
def sandbox() -> None:
    """Local emulators of Salesforce, HubSpot, Zendesk and Stripe with a synthetic customer base."""


def _knob_options(func: Any) -> Any:
    for name, kind, text in reversed([
        ("latency-ms", float, "Added latency per request."),
        ("rate-limits", click.Choice(["off", "real"]), "Enforce each vendor's documented rate limits."),
        ("error-rate", float, "Share of requests answered with a 5xx."),
        ("throttle-rate", float, "Share of requests answered with the vendor's 429."),
        ("timeout-rate", float, "Share of requests that hang for --timeout-seconds."),
        ("drop-rate", float, "Share of requests whose connection is dropped."),
        ("timeout-seconds", float, "How long a timed-out request hangs."),
    ]):
        func = click.option(f"--{name}", name.replace("-", "_"), type=kind, default=None, help=text)(func)
    return func


@sandbox.command("up")
@click.option("--accounts", default=2000, show_default=True, type=click.IntRange(10, 100_000),
              help="How many customers the world has.")
@click.option("--seed", default=7, show_default=True, type=int, help="Same seed, same world.")
@click.option("--dir", "directory", default="sandbox-data", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Where hub.yaml, sandbox.json and truth/ go.")
@click.option("--port-base", type=click.IntRange(1024, 65000), default=None,
              help="Serve Salesforce, HubSpot, Zendesk, Stripe on this port and the next three (default: free ports).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_knob_options
def sandbox_up(accounts: int, seed: int, directory: Path, port_base: int | None, as_json: bool,
               **knob_values: Any) -> None:
    """Generate the world, serve the four emulators on 127.0.0.1 until Ctrl-C."""
    import json

    from .sandbox.runner import describe, serve_until_stopped, start_sandbox
    from .sandbox.server import VENDORS
    from .sandbox.world import Knobs

    import signal
    import sys

    # a SIGTERM while the world is still being generated ends the command cleanly too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    knobs = Knobs()
    knobs.update({k: v for k, v in knob_values.items() if v is not None})
    ports = {v: port_base + i for i, v in enumerate(VENDORS)} if port_base else None
    try:
        running = start_sandbox(directory, accounts=accounts, seed=seed, knobs=knobs, ports=ports)
    except OSError as exc:
        raise click.ClickException(f"could not start the sandbox: {exc}") from None
    info = describe(running)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        truth = info["truth"]
        for vendor, url in running.urls.items():
            counts = ", ".join(f"{n:,} {k}" for k, n in info["records"][vendor].items() if n)
            click.echo(f"{vendor:<10} {url}  ({counts})")
        click.echo(f"truth      {truth['customers']:,} customers, {truth['active_now']:,} active, "
                   f"{truth['churn_90d']} churn within 90 days, monthly logo churn "
                   f"{truth['monthly_logo_churn']:.2%}, oracle ROC AUC {truth['oracle_auc']:.3f}")
        for label, path in info["files"].items():
            click.echo(f"{label:<10} {path}")
        click.echo("Serving on 127.0.0.1; Ctrl-C stops.")
    serve_until_stopped(running)


@main.command()
@click.option("--accounts", default=2000, show_default=True, type=click.IntRange(10, 100_000))
@click.option("--seed", default=7, show_default=True, type=int)
@click.option("--dir", "directory", default="demo", show_default=True,
              type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON at the end.")
def demo(accounts: int, seed: int, directory: Path, as_json: bool) -> None:
    """Start the sandbox, run the pipeline against it, and show what happened."""
    import json

    from .demo import run_demo

    summary = run_demo(directory.resolve(), accounts, seed, say=click.echo if not as_json else lambda _: None)
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))


@main.command("sync")
@config_option
@click.option("--source", "sources", multiple=True, help="Only this source (repeatable).")
@click.option("--stream", "stream_names", multiple=True, help="Only this stream (repeatable; with --source).")
@click.option("--full-refresh", is_flag=True, help="Ignore saved cursors and read everything again.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def sync_command(config_path: Path, sources: tuple[str, ...], stream_names: tuple[str, ...], full_refresh: bool,
                 as_json: bool) -> None:
    """Pull every configured source into the state store, incrementally."""
    import json
    import signal
    import threading

    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn
    from rich.table import Table

    from .connectors import build_connectors
    from .sync.engine import sync
    from .sync.store import Store

    config = load_config(config_path)
    try:
        connectors = build_connectors(config, list(sources) or None)
    except ValueError as exc:
        click.echo(f"error: --source {exc}", err=True)
        raise click.exceptions.Exit(EXIT_USAGE) from None
    streams = None
    if stream_names:
        streams = {c.source: [s for s in c.streams() if s in stream_names] for c in connectors}
        unknown = set(stream_names) - {s for names in streams.values() for s in names}
        if unknown:
            known = ", ".join(f"{c.source}: {' '.join(c.streams())}" for c in connectors)
            click.echo(f"error: --stream {', '.join(sorted(unknown))}: unknown ({known})", err=True)
            raise click.exceptions.Exit(EXIT_USAGE)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # finish the page in hand, save, exit
    console = Console(stderr=True, quiet=as_json)
    with Store(config.store.url) as store, Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                                    console=console, transient=True) as bars:
        tasks: dict[tuple[str, str], Any] = {}

        def progress(source: str, stream: str, n: int) -> None:
            key = (source, stream)
            if key not in tasks:
                tasks[key] = bars.add_task("")
            bars.update(tasks[key], description=f"{source}.{stream}: {n:,} records")

        result = sync(store, connectors, streams, full_refresh=full_refresh, progress=progress, stop=stop)
    rows = [vars(r) for r in result.streams]
    if as_json:
        click.echo(json.dumps({"run_id": result.run_id, "status": result.status, "streams": rows}, indent=2))
    else:
        table = Table(title=f"sync run {result.run_id}: {result.status}")
        for col in ("stream", "records", "deleted", "quarantined", "calls", "seconds", "error"):
            table.add_column(col, justify="right" if col not in ("stream", "error") else "left")
        for r in result.streams:
            table.add_row(f"{r.source}.{r.stream}", f"{r.records:,}", f"{r.deleted:,}", f"{r.quarantined:,}",
                          f"{r.calls:,}", f"{r.seconds:.1f}", r.error or "")
        Console().print(table)
    if result.status != "ok":
        raise click.exceptions.Exit(1)


@main.group()
def identity() -> None:
    """One customer per real company across every source: unify, export the links, review candidates."""


def _print_identity(result: Any, as_json: bool, extra: dict[str, Any] | None = None) -> None:
    import json

    from rich.console import Console
    from rich.table import Table

    if as_json:
        click.echo(json.dumps({**result.summary(), **(extra or {})}, indent=2, default=str))
        return
    state = (f"unified in {result.seconds:.1f} s, {result.written:,} rows written" if result.ran
             else "store unchanged since the last unification")
    table = Table(title=f"identity: {state}")
    table.add_column("what")
    table.add_column("count", justify="right")
    for label, value in (("account-level records", result.records), ("unified accounts", result.unified),
                         ("unmatched records", result.unmatched), ("in review", result.review),
                         ("conflicts", result.conflicts)):
        table.add_row(label, f"{value:,}")
    for kind, n in result.conflict_kinds.items():
        table.add_row(f"  {kind}", f"{n:,}")
    for pair, n in result.matched_pairs.items():
        table.add_row(f"matched {pair}", f"{n:,}")
    table.add_row("people linked", f"{result.people_linked:,} of {result.people:,}")
    for event, n in result.events.items():
        table.add_row(f"events: {event}", f"{n:,}")
    Console().print(table)
    for label, value in (extra or {}).items():
        click.echo(f"{label}: {value}")


@identity.command("run")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def identity_run(config_path: Path, as_json: bool) -> None:
    """Unify now (even if nothing changed) and print the summary."""
    from .sync.identity import unify
    from .sync.store import Store

    config = load_config(config_path)
    with Store(config.store.url) as store:
        result = unify(store, config.identity)
    _print_identity(result, as_json)


@identity.command("export")
@config_option
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="CSV to write: unified_id, source, source_id, method, confidence.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def identity_export(config_path: Path, out: Path, as_json: bool) -> None:
    """Write one row per account-level record with its unified id (unifying first if the store changed)."""
    from .sync.identity import ensure_unified, export_links
    from .sync.store import Store

    config = load_config(config_path)
    with Store(config.store.url) as store:
        result = ensure_unified(store, config.identity)
        rows = export_links(store, out)
    _print_identity(result, as_json, {"out": str(out), "rows": rows})


@identity.command("review")
@config_option
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path),
              help="Export the review queue as CSV, with an empty decision column (accept / reject).")
@click.option("--import", "import_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Import a review CSV with decisions filled in; they become overrides for the next run.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def identity_review(config_path: Path, out: Path | None, import_path: Path | None, as_json: bool) -> None:
    """Export candidate links below auto-accept for review, or import the decisions taken on them."""
    import json

    from .sync.identity import ensure_unified
    from .sync.identity_overrides import read_decisions, save_decisions, write_review_csv
    from .sync.store import Store

    if (out is None) == (import_path is None):
        click.echo("error: give exactly one of --out FILE or --import FILE", err=True)
        raise click.exceptions.Exit(EXIT_USAGE)
    config = load_config(config_path)
    with Store(config.store.url) as store:
        if out is not None:
            ensure_unified(store, config.identity)
            rows = write_review_csv(store, out)
            summary = {"out": str(out), "rows": rows}
            text = f"Wrote {rows:,} candidate pairs to {out}; fill in decision (accept or reject) and run " \
                   f"rhub identity review --import {out}"
        else:
            decisions = read_decisions(import_path)
            saved = save_decisions(store, decisions)
            accepted = sum(d[2] == "same" for d in decisions)
            summary = {"imported": saved, "accepted": accepted, "rejected": len(decisions) - accepted}
            text = (f"Saved {saved:,} decisions ({accepted:,} accept, {len(decisions) - accepted:,} reject) as "
                    "overrides; they apply at the next unification (rhub identity run, or any export)")
    click.echo(json.dumps(summary, indent=2) if as_json else text)


def _as_of_option(func: Any) -> Any:
    return click.option("--as-of", "as_of", default=None, metavar="DATE",
                        help="Score as of this UTC date/time (default: now), e.g. 2026-11-01.")(func)


def _parse_as_of(value: str | None) -> Any:
    import pandas as pd

    if value is None:
        return None
    try:
        return pd.Timestamp(value)
    except ValueError:
        click.echo(f"error: --as-of {value!r} is not a date (use e.g. 2026-11-01 or 2026-11-01T06:00)", err=True)
        raise click.exceptions.Exit(EXIT_USAGE) from None


def _money(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:,.0f}"


@main.group(invoke_without_command=True)
@config_option
@_as_of_option
@click.option("--retrain", is_flag=True, help="Train a new churn model first (else the stored one is used).")
@click.option("--top", default=10, show_default=True, type=click.IntRange(0, 1000), help="Accounts at risk to list.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def score(ctx: click.Context, config_path: Path, as_of: str | None, retrain: bool, top: int, as_json: bool) -> None:
    """Score every active account: health, churn probability, reason, lifecycle, playbooks.

    Saves the scores, playbook tasks and history in the store; prints the tier distribution and the
    accounts with the most ARR at risk. Subcommands export and backtest.
    """
    if ctx.invoked_subcommand is not None:
        ctx.obj = {**(ctx.obj or {}), "config_path": config_path, "as_of": as_of}
        return
    import json

    from rich.console import Console
    from rich.table import Table

    from .scoring.run import score as run_score
    from .sync.store import Store

    config = load_config(config_path)
    say = (lambda _: None) if as_json else click.echo
    with Store(config.store.url) as store:
        done = run_score(store, config, _parse_as_of(as_of), retrain=retrain, say=say)
    scores, tasks = done.result.scores, done.result.tasks
    risk = (scores["churn_probability"] * scores["arr"]).rename("arr_at_risk")
    ranked = scores.assign(arr_at_risk=risk).sort_values("arr_at_risk", ascending=False).head(top)
    tiers = {t: int((scores["tier"] == t).sum()) for t in ("green", "yellow", "red")}
    summary = {"run_id": done.run_id, "as_of": str(done.result.as_of), "accounts": len(scores), "tiers": tiers,
               "arr_at_risk": round(float(risk.sum()), 2), "model_id": done.model_id, "model_trained": done.trained,
               "tasks_new": int((tasks["status"] == "new").sum()),
               "tasks_deferred": int((tasks["status"] == "deferred").sum()),
               "held_out": int(scores["held_out"].sum()), "notes": done.result.notes,
               "seconds": {k: round(v, 1) for k, v in done.seconds.items()},
               "top_at_risk": ranked[["unified_id", "name", "tier", "churn_probability", "arr", "arr_at_risk",
                                      "churn_reason"]].to_dict("records")}
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    n = max(len(scores), 1)
    click.echo(f"Scored {len(scores):,} active accounts as of {done.result.as_of:%Y-%m-%d %H:%M} UTC "
               f"(run {done.run_id}, model {done.model_id}{', just trained' if done.trained else ''}).")
    click.echo("Tiers: " + ", ".join(f"{t} {c:,} ({c / n:.0%})" for t, c in tiers.items())
               + f"; ARR at risk {_money(summary['arr_at_risk'])}")
    click.echo(f"Playbook tasks: {summary['tasks_new']:,} new, {summary['tasks_deferred']:,} deferred by the alert "
               f"budget; {summary['held_out']:,} accounts in holdouts.")
    for note in done.result.notes:
        click.echo(f"note: {note}")
    if top and len(ranked):
        table = Table(title=f"Top {len(ranked)} ARR at risk")
        for column in ("account", "tier", "churn risk", "ARR", "at risk", "likely reason", "playbook"):
            table.add_column(column, justify="right" if column in ("churn risk", "ARR", "at risk") else "left")
        for row in ranked.itertuples():
            table.add_row(str(row.name or row.unified_id), str(row.tier), f"{row.churn_probability:.0%}",
                          _money(row.arr), _money(row.arr_at_risk), str(row.churn_reason or "-"),
                          str(row.playbook if isinstance(row.playbook, str) else "-"))
        Console().print(table)


@score.command("export")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="CSV to write, one row per account of the latest scoring run.")
@click.pass_context
def score_export(ctx: click.Context, out: Path) -> None:
    """Write the latest scores: unified_id, health_score, tier, previous_score, churn_probability,
    churn_reason, drivers, playbook and the rest of the score table."""
    from .scoring.pipeline import SCORE_COLUMNS
    from .sync.store import Store

    config = load_config(ctx.obj["config_path"])
    with Store(config.store.url) as store:
        latest = store.latest_scores()
    if latest is None:
        click.echo("error: nothing scored yet: run rhub score first", err=True)
        raise click.exceptions.Exit(1)
    run_id, frame = latest
    first = ["unified_id", "health_score", "tier", "previous_score", "churn_probability", "churn_reason", "drivers",
             "playbook"]
    frame[first + [c for c in SCORE_COLUMNS if c not in first]].to_csv(out, index=False)
    click.echo(f"Wrote {len(frame):,} accounts from scoring run {run_id} to {out}")


@score.command("backtest")
@click.option("--months", default=12, show_default=True, type=click.IntRange(1, 36))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def score_backtest(ctx: click.Context, months: int, as_json: bool) -> None:
    """How the configured scorecard would have ranked the accounts that then churned, month by month:
    ROC AUC of the health score and the churn rate per tier (evidence for changing weights)."""
    from .scoring.run import run_backtest
    from .sync.store import Store

    config = load_config(ctx.obj["config_path"])
    with Store(config.store.url) as store:
        try:
            table = run_backtest(store, config, _parse_as_of(ctx.obj["as_of"]), months)
        except ValueError as exc:
            click.echo(f"error: {exc}", err=True)
            raise click.exceptions.Exit(1) from None
    if as_json:
        click.echo(table.to_json(orient="records", indent=2))
        return
    click.echo(f"Scorecard backtest: churn within {config.scoring.horizon_days} days after each snapshot")
    click.echo(f"{'snapshot':<11} {'accounts':>8} {'churned':>8} {'ROC AUC':>8}   churn rate: red / yellow / green")
    for row in table.itertuples():
        auc = "-" if row.auc != row.auc else f"{row.auc:.3f}"
        rates = " / ".join("-" if r != r else f"{r:.1%} ({n:,})" for r, n in
                           ((row.red_churn, row.red_accounts), (row.yellow_churn, row.yellow_accounts),
                            (row.green_churn, row.green_accounts)))
        click.echo(f"{row.month:<11} {row.accounts:>8,} {row.churned:>8,} {auc:>8}   {rates}")


@main.group()
def model() -> None:
    """The churn model: train it on the history, show how well it predicts."""


@model.command("train")
@config_option
@_as_of_option
@click.option("--months", default=12, show_default=True, type=click.IntRange(2, 36),
              help="Monthly snapshots of history to train on.")
def model_train(config_path: Path, as_of: str | None, months: int) -> None:
    """Train the churn model on point-in-time snapshots and store it (scoring then uses it)."""
    from .scoring.evaluation import render_text
    from .scoring.run import train_and_store, utc
    from .sync.store import Store

    config = load_config(config_path)
    with Store(config.store.url) as store:
        try:
            done = train_and_store(store, config, utc(_parse_as_of(as_of)), months=months)
        except ValueError as exc:
            click.echo(f"error: {exc}", err=True)
            raise click.exceptions.Exit(1) from None
    m = done.model
    click.echo(f"Trained model {done.model_id} in {done.seconds:.0f} s on {m.n_rows_:,} snapshot rows "
               f"({m.n_positives_:,} churned) from {months} monthly snapshots.")
    if m.fallback_:
        click.echo(f"note: {m.fallback_reason_}")
    else:
        click.echo(render_text(m.validation_))


@model.command("report")
@config_option
@click.option("--json", "as_json", is_flag=True)
def model_report(config_path: Path, as_json: bool) -> None:
    """The stored model's validation report: ROC AUC, PR AUC, Brier, calibration, lift, per segment."""
    import json

    from .scoring.evaluation import render_text
    from .sync.store import Store

    config = load_config(config_path)
    with Store(config.store.url) as store:
        found = store.latest_model(summary=True)
    if found is None:
        click.echo("error: no churn model stored yet: run rhub model train (or rhub score)", err=True)
        raise click.exceptions.Exit(1)
    model_id, info = found
    if as_json:
        click.echo(json.dumps({"model_id": model_id, **info}, indent=2, default=str))
        return
    window = info.get("training_window") or ["?", "?"]
    click.echo(f"Model {model_id}, trained {info.get('trained_at')}: {info['n_rows']:,} rows "
               f"({info['n_positives']:,} churned), snapshots {window[0][:10]} .. {window[1][:10]}; "
               f"{len(info['features'])} features")
    if info.get("fallback"):
        click.echo(f"note: {info['fallback_reason']}")
        return
    v = info["validation"]
    click.echo(f"Validated on {v.get('validation_time') or 'a held-out split'} ({v.get('split')} split, "
               f"calibration {v.get('calibration_method')}):")
    click.echo(render_text(v))


if __name__ == "__main__":  # pragma: no cover - `python -m retention_hub.cli`
    main()
