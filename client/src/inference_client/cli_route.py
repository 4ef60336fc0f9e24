"""`infer route` and `infer retire`: show or set how a model's new jobs split among its versions; retire."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

from inference_client._admin import Routing, Shadow, ShadowReport
from inference_client.cli_errors import EXIT_OK, UsageError, documented_command
from inference_client.client import Client

ROUTE_DESCRIPTION = """\
With MODEL alone: show each published version's share of new jobs, the default version, and how the
shadow version (one that also predicts a sample of jobs, its outputs only compared) agrees.

With VERSION=WEIGHT pairs (an admin key): set the shares, integer percentages summing to 100.
Versions not named get no new jobs; jobs naming their version keep it. Every API process
follows a change within a second. The shadow is kept unless --shadow or --no-shadow is given.
Rolling back is routing again."""
ROUTE_EXAMPLES = """\
examples:
  infer route iris                            how iris's traffic is split now
  infer route iris 1.0.0=90 1.1.0=10          send 10 % of new jobs to 1.1.0 (a canary)
  infer route iris 1.1.0=100                  all new jobs to 1.1.0
  infer route iris 1.0.0=100 --shadow 1.1.0:0.2
                                              1.1.0 also predicts 20 % of jobs, compared only
  infer route iris 1.0.0=100 --no-shadow      back to 1.0.0 alone, no shadow"""
RETIRE_DESCRIPTION = """\
Retire a version of MODEL (an admin key): it is no longer listed or served, its files are
deleted, and workers free its memory. A version that gets traffic, is the shadow or is the
default is refused: route its traffic elsewhere first (`infer route`)."""
RETIRE_EXAMPLES = """\
examples:
  infer retire iris 1.0.0                     asks first at a terminal
  infer retire iris 1.0.0 --yes               does not ask"""


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `route` and `retire` commands to the command line's subcommands."""
    route = documented_command(
        sub, "route", "show how a model's traffic splits among its versions, or set it (admin)",
        ROUTE_DESCRIPTION, ROUTE_EXAMPLES,
    )  # fmt: skip
    route.add_argument("model", metavar="MODEL", help="the model's name, e.g. iris")
    route.add_argument("weights", nargs="*", metavar="VERSION=WEIGHT", help="e.g. 1.0.0=90 1.1.0=10")
    shadow = route.add_mutually_exclusive_group()
    shadow.add_argument(
        "--shadow",
        metavar="VERSION[:SAMPLE]",
        help="a version that also predicts SAMPLE (0-1, default 0.1) of jobs",
    )
    shadow.add_argument("--no-shadow", action="store_true", help="remove the shadow version")

    retire = documented_command(
        sub, "retire", "retire a version no traffic goes to (admin)", RETIRE_DESCRIPTION, RETIRE_EXAMPLES
    )
    retire.add_argument("model", metavar="MODEL", help="the model's name, e.g. iris")
    retire.add_argument("version", metavar="VERSION", help="the version to retire, e.g. 1.0.0")
    retire.add_argument(
        "-y", "--yes", action="store_true", help="do not ask first (asked at a terminal only)"
    )


def route(client: Client, out: Console, args: argparse.Namespace) -> int:
    """Show the model's routing, or set it from the VERSION=WEIGHT pairs and show the result."""
    if not args.weights:
        if args.shadow or args.no_shadow:
            raise UsageError("Name the weights too: e.g. `infer route MODEL 1.0.0=100 --shadow 1.1.0:0.1`.")
        _show(client, out, args.model, client.routing(args.model))
        return EXIT_OK
    routes = _weights(args.weights)
    if args.no_shadow:
        shadow = None
    elif args.shadow:
        shadow = _shadow(args.shadow)
    else:
        shadow = client.routing(args.model).shadow
    saved = client.set_routing(args.model, routes, shadow)
    kept = " (the shadow kept: --no-shadow removes it)" if shadow and not args.shadow else ""
    out.print(f"[green]Saved.[/] New jobs of {args.model} follow it within a second{kept}.")
    _show(client, out, args.model, saved)
    return EXIT_OK


def retire(client: Client, out: Console, args: argparse.Namespace) -> int:
    """Retire the version, asking first at a terminal unless --yes."""
    if not args.yes and sys.stdin.isatty():
        answer = input(f"Retire {args.model} {args.version}? Its files are deleted for good. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            out.print("Nothing retired.")
            return EXIT_OK
    client.retire(args.model, args.version)
    out.print(
        f"[green]Retired[/] {args.model} {args.version}: no longer listed or served, its files deleted."
    )
    return EXIT_OK


def _weights(pairs: list[str]) -> dict[str, int]:
    routes: dict[str, int] = {}
    for pair in pairs:
        version, sep, weight = pair.partition("=")
        if not sep or not version or not weight.strip().isdigit():
            raise UsageError(
                f"{pair!r}: write each weight as VERSION=WEIGHT, a whole percentage, e.g. 1.0.0=90."
            )
        if version in routes:
            raise UsageError(f"{version} is named twice: give each version one weight.")
        routes[version] = int(weight)
    return routes


def _shadow(text: str) -> Shadow:
    version, _, sample = text.partition(":")
    try:
        share = float(sample) if sample else 0.1
    except ValueError:
        share = -1.0
    if not version or not 0 < share <= 1:
        raise UsageError(f"--shadow {text}: write VERSION or VERSION:SAMPLE, SAMPLE a share above 0 up to 1.")
    return Shadow(version, share)


def _show(client: Client, out: Console, model: str, routing: Routing) -> None:
    """Print each published version's weight, the default and the shadow, and how to change them."""
    versions = client.model(model).versions
    listed = versions + [v for v in routing.routes if v not in versions]
    default = routing.default
    table = Table("version", "share of new jobs", "note", title=f"{model}: routing", title_justify="left")
    for version in listed:
        weight = routing.routes.get(version, 0)
        notes = []
        if version == default:
            notes.append("default")
        if routing.shadow is not None and routing.shadow.version == version:
            notes.append(f"shadow: also predicts {100 * routing.shadow.sample:g} % of jobs, compared only")
        bar = "█" * round(weight / 5)
        table.add_row(version, f"{weight:>3} % {bar}", ", ".join(notes))
    out.print(table)
    if routing.updated_at:
        out.print(f"Last set at {routing.updated_at} by key {routing.updated_by}.")
    else:
        out.print(f"No routing set: every new job goes to the default version, {default}.")
    if routing.shadow is not None:
        out.print(_agreement(client.shadow(model)))
    out.print(_suggestion(model, listed, routing), soft_wrap=True)


def _agreement(report: ShadowReport) -> str:
    if not report.compared or report.agreement is None:
        return (
            f"Shadow {report.version}: no records compared yet. It predicts a sample of the new JSON jobs "
            "that name no version (bulk CSV jobs are not shadowed)."
        )
    diff = "" if report.mean_abs_diff is None else f", mean absolute difference {report.mean_abs_diff:.4g}"
    return (
        f"Shadow {report.version}: {report.compared:,} records compared, "
        f"agreement {100 * report.agreement:.1f} %{diff}."
    )


def _suggestion(model: str, versions: list[str], routing: Routing) -> str:
    """Return a command that changes the routing: a canary for the newest other version, or a rollback."""
    default = routing.default
    others = [v for v in versions if v != default]
    if not others:
        return "Only one version is published: `infer publish --help` tells how to add another."
    if routing.routes.get(default) == 100:
        newest = others[-1]
        return (
            f"To send 10 % of new jobs to {newest} (admin key): infer route {model} {default}=90 {newest}=10"
        )
    return f"To send every new job to {default} again (admin key): infer route {model} {default}=100"
