"""`gentext serve`: its flags (the fields of Listening, LoadConfig and ServerLimits) and the call
into `gentext.server.running`, which imports the web framework only when a server starts."""

from __future__ import annotations

import argparse
import os

from gentext.cli.options import add_options, given
from gentext.useconfig import Listening, LoadConfig, ServerLimits


def cmd_serve(args: argparse.Namespace) -> int:
    from gentext.server.running import serve

    limits = ServerLimits(**given(args, ServerLimits)).validate()
    listening = Listening(**given(args, Listening)).validate()
    api_key = listening.api_key or os.environ.get("GENTEXT_API_KEY") or None
    serve(
        args.runs,
        listening.host,
        listening.port,
        limits,
        api_key=api_key,
        cors_origins=listening.cors_origins,
        batching=not args.no_batching,
        load=given(args, LoadConfig),
        threads=getattr(args, "threads", None),
    )
    return 0


def register(sub) -> None:
    p = sub.add_parser("serve", help="HTTP API (JSON and streaming) and a web playground for trained runs")
    p.add_argument("runs", nargs="+", help="run directories, loaded once at start")
    p.add_argument(
        "--no-batching",
        action="store_true",
        help="each generation alone, in turn (a batch of one row: --max-batch-rows 1) instead of one batched step",
    )
    add_options(p, Listening)
    add_options(p, LoadConfig)
    add_options(p, ServerLimits)
    p.set_defaults(func=cmd_serve)
