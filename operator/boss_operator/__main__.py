"""`python -m boss_operator`: run the operator (what the chart's Deployment runs)."""

from __future__ import annotations

import argparse
import logging

import kopf

from . import handlers  # noqa: F401  (registers the handlers)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="boss-operator", description="The BOSS Kubernetes operator")
    p.add_argument("--namespace", "-n", action="append", default=[],
                   help="watch only this namespace (repeatable); default: the whole cluster")
    p.add_argument("--liveness", default="http://0.0.0.0:8080/healthz", help="kopf's health endpoint")
    p.add_argument("--verbose", "-v", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kopf.run(standalone=True, clusterwide=not args.namespace, namespaces=args.namespace,
             liveness_endpoint=args.liveness or None, memo=kopf.Memo(namespaces=list(args.namespace)))


if __name__ == "__main__":
    main()
