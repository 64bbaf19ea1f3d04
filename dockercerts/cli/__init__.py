"""The ``dockercerts`` command: ``inspect``, ``probe`` and ``demo``.

Docker's only feedback on a broken ``certs.d`` folder is one line in the daemon log. This
command explains instead: which folder Docker reads for a registry, what is in it and in which
order, what Docker would refuse and how to fix it (``inspect``); which client certificate a
registry accepts (``probe``); and a self-contained run of the transport against a local mTLS
registry (``demo``).

One module per command (:mod:`.inspect`, :mod:`.inspect_runtimes`, :mod:`.probe`,
:mod:`.demo`), one for rendering (:mod:`.render`), one for arguments (:mod:`.args`) and one
for the report pieces the inspect reports share (:mod:`.reports`); this one parses the
command line and runs the command. Every report is built as a plain dict first and then
either dumped as JSON (``--json``, the schema documented in ``docs/cli.md``) or rendered as
text, so the two can never disagree.

Exit status: 0 clean, 1 warnings (``inspect``), 2 Docker would fail / no certificate accepted /
a usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import ssl
import sys
import traceback
from collections.abc import Sequence
from importlib.metadata import version
from typing import Optional, TextIO

import httpx

from .. import __version__
from ..errors import CertsDirError, InvalidHostError
from .args import PLATFORMS, RUNTIMES, SCHEMA, CLIError, Report, classify, redact
from .demo import run_demo
from .inspect import inspect_report, render_inspect
from .probe import probe_report, render_probe
from .render import Style, table, use_colour

__all__ = [
    "SCHEMA",
    "CLIError",
    "Style",
    "classify",
    "inspect_report",
    "main",
    "probe_report",
    "redact",
    "render_inspect",
    "render_probe",
    "run_demo",
    "table",
    "use_colour",
]

log = logging.getLogger("dockercerts")


def _versions() -> str:
    return (
        f"dockercerts {__version__} (Python {sys.version.split()[0]}, httpx {httpx.__version__}, "
        f"cryptography {version('cryptography')}, {ssl.OPENSSL_VERSION})"
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; ``--debug`` and ``--color`` work before or after the command."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a sub-command's default must not overwrite what was given before it.
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show tracebacks and dockercerts' debug log on stderr",
    )
    common.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default=argparse.SUPPRESS,
        help="colour output: auto (a terminal, NO_COLOR unset), always or never",
    )
    parser = argparse.ArgumentParser(
        prog="dockercerts",
        description="Explain and test Docker's certs.d client certificates for registries.",
        epilog="Exit status: 0 clean, 1 warnings, 2 Docker would fail or an error. "
        "Docs: docs/cli.md",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=_versions())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def where(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--root", metavar="DIR", help="the certs.d folder (default: Docker's, per platform)"
        )
        sub.add_argument(
            "--platform",
            choices=PLATFORMS,
            help="whose rules: folder names, default root and trust (default: this machine)",
        )
        sub.add_argument(
            "--trust",
            choices=("merge", "replace"),
            help="system roots plus the .crt files (merge, Linux) or only them (replace, "
            "Windows); default: the platform's rule",
        )
        sub.add_argument(
            "--runtime",
            choices=RUNTIMES,
            default="docker",
            help="whose folders: docker (default), podman (containers/image: podman, skopeo, "
            "buildah, CRI-O) or containerd (hosts.toml: ctr, Kubernetes, nerdctl)",
        )
        sub.add_argument(
            "--cert-dir",
            metavar="DIR",
            help="podman's --cert-dir: one folder read for every host (with --runtime podman)",
        )
        sub.add_argument("--json", action="store_true", help="print the report as JSON")

    inspect = commands.add_parser(
        "inspect",
        parents=[common],
        help="explain the host directory Docker reads for a registry",
        description="Show the host directory Docker reads for HOST, URL or IMAGE-REF, what "
        "is in it, what Docker would refuse, and how to fix it. A bare name:port is a "
        "registry host here (as in 'docker login reg:5000').",
    )
    inspect.add_argument("target", metavar="HOST|URL|IMAGE-REF")
    where(inspect)

    probe = commands.add_parser(
        "probe",
        parents=[common],
        help="connect with every client certificate in turn and say which one is accepted",
        description="GET the URL once per candidate (client pair) of its host directory, in "
        "Docker's order, and show how the registry answered each and which one "
        "dockercerts.Transport would keep. A URL without a path gets /v2/.",
    )
    probe.add_argument("url", metavar="URL")
    where(probe)
    probe.add_argument(
        "--timeout", type=float, default=5.0, metavar="S", help="seconds per attempt (5)"
    )
    probe.add_argument(
        "--policy",
        choices=("docker", "docker-legacy", "tls-only"),
        default="docker",
        help="the rejection policy to judge answers by, as Transport(policy=...) (docker)",
    )

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="run a local mTLS registry and watch the transport pick the right certificate",
        description="Start a local mTLS registry, write a temporary certs.d folder whose "
        "first client certificate is wrong, and show inspect, the transport and probe at "
        "work. No network, no setup; everything is removed afterwards.",
    )
    demo.add_argument(
        "--keep", action="store_true", help="keep the temporary certs.d folder to explore it"
    )
    return parser


def _one_line(message: str, fix: str = "") -> str:
    text = " ".join(message.split())
    return f"dockercerts: error: {text}" + (f" (fix: {' '.join(fix.split())})" if fix else "")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status (the console script exits with it)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse has printed
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    debug = bool(getattr(args, "debug", False))
    out, err = sys.stdout, sys.stderr
    style = Style(use_colour(out, getattr(args, "color", "auto")))
    # The library logs its warnings; without a handler Python's last-resort handler would
    # print them on stderr next to the report that already explains them.
    handler: logging.Handler = logging.NullHandler()
    previous_level = log.level
    if debug:
        handler = logging.StreamHandler(err)
        handler.setFormatter(logging.Formatter("debug: %(name)s: %(message)s"))
        log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    try:
        return _run(args, parser, out, style)
    except (CLIError, InvalidHostError, CertsDirError) as exc:
        if debug:
            traceback.print_exc(file=err)
        if isinstance(exc, CLIError):
            print(_one_line(exc.message, exc.fix), file=err)
        else:
            print(_one_line(str(exc)), file=err)
        return 2
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc(file=err)
        print("dockercerts: interrupted", file=err)
        return 130
    except BrokenPipeError:
        # The reader went away (| head): stop quietly; point stdout at devnull so the
        # interpreter's final flush does not fail again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        if debug:
            traceback.print_exc(file=err)
        print(
            _one_line(
                f"unexpected {type(exc).__name__}: {exc}",
                "run again with --debug and report the traceback",
            ),
            file=err,
        )
        return 2
    finally:
        log.removeHandler(handler)
        log.setLevel(previous_level)


_MAX_TIMEOUT = 86400  # a day; beyond some point the platform's clocks overflow


def _os_error(args: argparse.Namespace, exc: OSError, out: TextIO) -> int:
    """An ``OSError`` the report did not foresee: still a report (exit 2, JSON for --json).

    Every file-system call of the reports is meant to be caught where it happens; this is
    the net under them, so a folder nobody thought of never ends in a traceback.
    """
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    message = f"{exc.strerror or type(exc).__name__}{where}"
    fix = "check the permissions and the type of the files and folders under the root"
    if args.json:
        report: Report = {
            "schema": SCHEMA,
            "command": args.command,
            "error": {"type": type(exc).__name__, "message": message, "fix": fix, "paths": []},
            "status": "error",
            "exit_code": 2,
        }
        print(json.dumps(report, indent=2), file=out)
    else:
        print(_one_line(f"cannot read the folder: {message}", fix), file=sys.stderr)
    return 2


def _run(
    args: argparse.Namespace, parser: argparse.ArgumentParser, out: TextIO, style: Style
) -> int:
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "demo":
        return run_demo(out, style, keep=args.keep)
    report: Report
    if args.cert_dir is not None and args.runtime != "podman":
        raise CLIError("--cert-dir is podman's option", "add --runtime podman, or use --root")
    if args.command == "inspect":
        try:
            report = inspect_report(
                args.target,
                root=args.root,
                platform=args.platform,
                trust=args.trust,
                runtime=args.runtime,
                cert_dir=args.cert_dir,
            )
        except OSError as exc:
            return _os_error(args, exc, out)
        lines = render_inspect(report, style) if not args.json else []
    else:
        if not (math.isfinite(args.timeout) and 0 < args.timeout <= _MAX_TIMEOUT):
            raise CLIError(
                f"--timeout must be a positive number of seconds, at most {_MAX_TIMEOUT}",
                "e.g. --timeout 5",
            )
        if "@" in args.url.split("://", 1)[-1].split("/", 1)[0]:
            print(
                "dockercerts: note: the user name and password in the URL are not sent "
                "(credentials removed: probe tests client certificates only)",
                file=sys.stderr,
            )
        try:
            report = probe_report(
                args.url,
                root=args.root,
                platform=args.platform,
                trust=args.trust,
                policy=args.policy,
                timeout=args.timeout,
                runtime=args.runtime,
                cert_dir=args.cert_dir,
            )
        except OSError as exc:
            return _os_error(args, exc, out)
        lines = render_probe(report, style) if not args.json else []
    if args.json:
        print(json.dumps(report, indent=2), file=out)
    else:
        print("\n".join(lines), file=out)
    code: int = report["exit_code"]
    return code
