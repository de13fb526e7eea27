"""`duogen registry promote|resolve`: the MLflow model registry as users drive it."""

from __future__ import annotations

import argparse
import json


def cmd_promote(args: argparse.Namespace) -> int:
    """Move an alias to a version if every gate (`--gate metric=threshold`, metric >= threshold, read from
    the metrics of the run that registered the version) passes; the decision is recorded either way. Exit 1
    when rejected."""
    from duogen.platform.key_value import split_items
    from duogen.platform.registry import promote

    gates = {}
    try:
        for metric, value in split_items(args.gate, "--gate", "METRIC", "NUMBER"):
            try:
                gates[metric] = float(value)
            except ValueError:
                raise ValueError(f"--gate '{metric}={value}' is not METRIC=NUMBER") from None
    except ValueError as err:
        raise SystemExit(f"duogen registry promote: error: {err}") from None
    decision = promote(args.model, args.version, args.alias, gates, args.tracking_uri)
    print(json.dumps(decision.to_dict()))
    return 0 if decision.promoted else 1


def cmd_resolve(args: argparse.Namespace) -> int:
    """Print the storage URI behind models:/NAME@ALIAS or models:/NAME/VERSION that KServe's storage
    initializer can fetch (a pinned `storageUri`). Behind an MLflow server run with --serve-artifacts, give
    its --artifacts-destination: the version's `mlflow-artifacts:/...` location is translated under it."""
    from duogen.platform.registry import resolve

    print(resolve(args.uri, args.tracking_uri, args.artifacts_destination))
    return 0


def add_registry(sub) -> None:
    p = sub.add_parser("registry", help="MLflow model registry: promote, resolve", description=__doc__)
    kinds = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    pr = kinds.add_parser("promote", help="move an alias if the gates pass", description=cmd_promote.__doc__)
    pr.add_argument("--model", required=True, help="registered model name")
    pr.add_argument("--version", required=True, help="version number")
    pr.add_argument("--alias", default="champion", help="(default: champion)")
    pr.add_argument("--gate", action="append", metavar="METRIC=MIN", help="a gate (repeatable)")
    pr.set_defaults(func=cmd_promote)
    rs = kinds.add_parser(
        "resolve", help="the storage URI of a models:/ URI", description=cmd_resolve.__doc__
    )
    rs.add_argument("uri", help="models:/NAME@ALIAS or models:/NAME/VERSION")
    rs.add_argument(
        "--artifacts-destination",
        default=None,
        help="the MLflow server's --artifacts-destination, e.g. s3://duogen/mlflow "
        "(default: MLFLOW_ARTIFACTS_DESTINATION)",
    )
    rs.set_defaults(func=cmd_resolve)
    for q in (pr, rs):
        q.add_argument("--tracking-uri", default=None, help="MLflow (default: MLFLOW_TRACKING_URI)")
