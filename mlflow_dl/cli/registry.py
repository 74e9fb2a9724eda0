"""Shipping a model: `promote` the best run to the registry, `serve` NAME@ALIAS, and the tracking `server`."""

from __future__ import annotations

import sys

import click

from mlflow_dl.cli.common import quiet_tensorflow
from mlflow_dl.delivery.outage import needs_server


@click.command()
@click.option("--experiment", required=True, help="Experiment whose FINISHED runs compete.")
@click.option("--model-name", required=True, help="Registered model name.")
@click.option("--parent-run-id", default=None, help="Only the children of this sweep run.")
@click.option("--dataset", default=None, help="Only runs on this data set (e.g. breast_cancer).")
@click.option("--key", default=None, help="Only runs of this comparability key (tag mlflow_dl.comparability_key).")
@click.option("--alias", default="champion", show_default=True)
@click.option("--min-improvement", default=0.0, show_default=True, type=float,
              help="The alias moves only if model_val_loss improves by more than this.")
@click.option("--allow-signature-change", is_flag=True, help="Promote even if the input columns changed.")
@click.option("--allow-key-change", is_flag=True, help="Promote a run of another comparability key than the champion's.")
@needs_server("promote", "rank the runs and register the winner")
def promote(experiment, model_name, parent_run_id, dataset, key, alias, min_improvement, allow_signature_change,
            allow_key_change):
    """Register the run with the lowest model_val_loss (one comparability key) and point the alias at it."""
    quiet_tensorflow()
    from mlflow_dl.registry.promotion import promote as promote_fn
    from mlflow_dl.registry.serving import ServeSpec, shell_command

    result = promote_fn(experiment, model_name, parent_run_id=parent_run_id or None, alias=alias,
                        min_improvement=min_improvement, allow_signature_change=allow_signature_change,
                        dataset=dataset or None, key=key or None, allow_key_change=allow_key_change)
    click.echo(result.message)
    click.echo(f"serve: {shell_command(ServeSpec(model_name, alias))}")


@click.command()
@click.option("--model-name", required=True, help="Registered model name.")
@click.option("--alias", default="champion", show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5001, show_default=True, type=int)
@needs_server("serve", "resolve models:/NAME@ALIAS in the model registry")
def serve(model_name, alias, host, port):
    """Serve NAME@ALIAS with `mlflow models serve --env-manager local` (Ctrl-C stops it)."""
    from mlflow_dl.registry.serving import ServeSpec, check_registered, serve as serve_fn, shell_command

    spec = ServeSpec(model_name, alias, host, port)
    check_registered(spec)
    click.echo(shell_command(spec), err=True)
    sys.exit(serve_fn(spec))


@click.command()
@click.option("--backend-store-uri", default="sqlite:///mlflow.db", show_default=True,
              help="sqlite:///FILE (embedded) or postgresql://USER@HOST:PORT/DB (team).")
@click.option("--artifacts-destination", default="./mlartifacts", show_default=True,
              help="Where the server keeps artifacts (clients upload through it).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Another address needs --app-name basic-auth.")
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--app-name", default=None, type=click.Choice(["basic-auth"]),
              help="Users and permissions; refuses to start while the admin password is the default.")
@click.option("--allowed-hosts", default="", help="Comma list of Host names clients use; no wildcard.")
@click.option("--workers", default=1, show_default=True, type=int)
def server(backend_store_uri, artifacts_destination, host, port, app_name, allowed_hosts, workers):
    """Start the tracking server: embedded SQLite by default, PostgreSQL + basic-auth for a team."""
    from mlflow_dl.registry.team_server import ServerSpec, command, serve as serve_fn

    spec = ServerSpec(backend_store_uri, artifacts_destination, host, port, app_name,
                      tuple(h.strip() for h in allowed_hosts.split(",") if h.strip()), workers)
    click.echo(" ".join(command(spec)), err=True)
    sys.exit(serve_fn(spec))
