"""Command line: flags in the Prometheus exporter style, and the wiring from config to server."""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import logging
import re
import sys
from collections.abc import Sequence

from exporter.app import (
    Controls,
    build_http_client,
    identity,
    load_configs,
    login_command,
    poll_once,
    serve,
    stop_on_signals,
)
from exporter.auth import DEFAULT_REDIRECT_URI, LOGIN_FLOWS, LoginError, interactive_login
from exporter.config import Config, ConfigError
from exporter.files import within
from exporter.http.listen import DEFAULT_LISTEN_ADDRESS, parse_listen_address
from exporter.http.routes import DEFAULT_TELEMETRY_PATH
from exporter.http.server import DEFAULT_MAX_CONNECTIONS, ServeOptions
from exporter.logs import REDACTOR, add_log_flags, setup_logging
from exporter.model import escape_controls
from exporter.version import PYTHON_VERSION, REVISION, VERSION
from exporter.webconfig import WebConfigFile

log = logging.getLogger("exporter")

DEFAULT_CONFIG_FILE = "partnercenter-exporter.yml"
EXIT_CONFIG = 2
# --config.check: the config loads, but a credential in it cannot sign in (an expired certificate).
EXIT_CHECK_FAILED = 1


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="partnercenter-exporter", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Prometheus exporter for Microsoft Partner Center delegated admin (DAP) "
                    "statistics. Subcommands: `login` (Secure Application Model sign-in) and "
                    "`demo` (runs against the built-in simulator).")
    parser.add_argument("--config.file", dest="config_file", default=DEFAULT_CONFIG_FILE,
                        help=f"path to the YAML config (default: {DEFAULT_CONFIG_FILE})")
    parser.add_argument("--web.listen-address", dest="listen_address", action="append", default=None,
                        type=_listen_address,
                        help="address to listen on; repeat it to listen on several. :PORT is every "
                             f"IPv4 and IPv6 address (default: {DEFAULT_LISTEN_ADDRESS})")
    parser.add_argument("--web.telemetry-path", dest="telemetry_path", type=_telemetry_path,
                        default=DEFAULT_TELEMETRY_PATH,
                        help=f"path to serve the metrics on (default: {DEFAULT_TELEMETRY_PATH})")
    parser.add_argument("--web.systemd-socket", dest="systemd_socket", action="store_true",
                        help="listen on the sockets systemd passes (socket activation, a .socket "
                             "unit) instead of --web.listen-address")
    parser.add_argument("--web.disable-exporter-metrics", dest="exporter_metrics", action="store_false",
                        help="leave the process_*, python_gc_* and python_info metrics out")
    parser.add_argument("--web.config.file", dest="web_config_file", default=None,
                        help="exporter-toolkit web config: TLS, basic auth, headers")
    parser.add_argument("--web.max-connections", dest="max_connections", type=_positive,
                        default=DEFAULT_MAX_CONNECTIONS,
                        help="most client connections open at once; at the limit the longest-quiet "
                             f"one is dropped for a new one (default: {DEFAULT_MAX_CONNECTIONS}; never "
                             "more than half of ulimit -n)")
    parser.add_argument("--config.check", dest="config_check", action="store_true",
                        help="validate the config and every secret it references, then exit")
    parser.add_argument("--once", action="store_true",
                        help="poll every tenant once, print the metrics to stdout and exit")
    parser.add_argument("--version", action="version",
                        version=f"partnercenter-exporter {VERSION}\n  revision: {REVISION}\n"
                                f"  python:   {PYTHON_VERSION}")
    add_log_flags(parser)
    return parser


def _telemetry_path(text: str) -> str:
    if not text.startswith("/") or text in ("/", "/healthz", "/readyz") or any(c in text for c in "?# "):
        raise argparse.ArgumentTypeError(
            f"must be a path starting with / other than /, /healthz and /readyz, got {text[:40]!r}")
    if not _PATH_CHARACTERS.fullmatch(text):
        # A client sends other characters percent-encoded, so such a path would never match.
        raise argparse.ArgumentTypeError(
            f"use only ASCII letters, digits and - . _ ~ / in the path, got {text[:40]!r}")
    return text


_PATH_CHARACTERS = re.compile(r"[A-Za-z0-9._~/-]+")


def _listen_address(text: str) -> str:
    try:
        parse_listen_address(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text[:20]!r}")
    return int(text)


GIL_SWITCH_INTERVAL = 0.0005  # seconds; Python's default is 0.005


def tune_process() -> None:
    """Process-wide settings for a long run; the entry point calls it once the App is built."""
    # Poll threads parse and render with the GIL held; by default a scrape could wait 5 ms
    # for it at every turn. A shorter switch interval keeps scrape latency flat during polls.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    # What exists now (modules, MSAL apps, HTTP clients) lives for the whole run; leaving it out
    # of the collector's full passes keeps those pauses, which stop every thread, short.
    gc.freeze()


def _load(config_file: str, web_config_file: str | None) -> tuple[Config, WebConfigFile | None] | None:
    """Both config files, off the main thread (a file on a hung mount must not hold it); None, with
    every error printed, when they cannot be used."""
    try:
        return within(lambda: load_configs(config_file, web_config_file), "the config")
    except ConfigError as err:
        for line in err.errors:
            print(REDACTOR(line), file=sys.stderr)
    except TimeoutError as err:
        print(err, file=sys.stderr)
    return None


def run(argv: Sequence[str]) -> int:
    args = _run_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    loaded = _load(args.config_file, args.web_config_file)
    if loaded is None:
        return EXIT_CONFIG
    config, web = loaded
    if args.config_check:
        # The config loads whatever a certificate's dates: expiry needs no edit, and one tenant's
        # certificate must not stop the others. The check still says which sign-ins will fail.
        now = dt.datetime.now(dt.UTC)
        problems = [f"{where}: {problem}" for where, cert in config.certificates()
                    if (problem := cert.problem(now)) is not None]
        for line in problems:
            print(REDACTOR(line), file=sys.stderr)
        if problems:
            return EXIT_CHECK_FAILED
        print("OK")
        return 0
    if args.once:
        return poll_once(config, args.config_file)
    controls = Controls()
    stop_on_signals(controls)
    options = ServeOptions(telemetry_path=args.telemetry_path, systemd_socket=args.systemd_socket,
                           exporter_metrics=args.exporter_metrics)
    return serve(config, config_path=args.config_file,
                 listen_address=args.listen_address or [DEFAULT_LISTEN_ADDRESS], web=web,
                 controls=controls, max_connections=args.max_connections, options=options,
                 settle=tune_process)


def login(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="partnercenter-exporter login",
        description="Sign in once, interactively and with MFA, and store the rotating refresh token "
                    "in the tenant's token_cache_file or token_store.")
    parser.add_argument("--config.file", dest="config_file", default=DEFAULT_CONFIG_FILE)
    parser.add_argument("--tenant", required=True, help="the tenant's `name` in the config")
    parser.add_argument("--flow", choices=list(LOGIN_FLOWS), default="device-code",
                        help="device-code (default): enter a code at Microsoft's device login page; "
                             "auth-code: open a URL in any browser and paste back the URL it was "
                             "redirected to, for tenants whose Conditional Access blocks device code")
    parser.add_argument("--redirect-uri", dest="redirect_uri", default=DEFAULT_REDIRECT_URI,
                        help="with --flow=auth-code: a redirect URI registered on the app as a "
                             f"mobile and desktop platform (default: {DEFAULT_REDIRECT_URI})")
    add_log_flags(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    loaded = _load(args.config_file, None)
    if loaded is None:
        return EXIT_CONFIG
    config, _ = loaded
    tenant = next((t for t in config.tenants if t.name == args.tenant), None)
    if tenant is None:
        names = ", ".join(t.name for t in config.tenants)
        print(f"--tenant: no tenant named {args.tenant!r} in {args.config_file}; known: {names}",
              file=sys.stderr)
        return EXIT_CONFIG
    try:
        with build_http_client(config) as http:
            user = interactive_login(identity(tenant, config.endpoints,
                                              login=login_command(args.config_file, tenant.name)),
                                     http, out=sys.stdout, flow=args.flow, redirect_uri=args.redirect_uri,
                                     keep_secrets=REDACTOR.keep)
    except LoginError as err:
        print(f"login failed: {escape_controls(REDACTOR(str(err)))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("login cancelled", file=sys.stderr)
        return 130
    # True for both stores: the file is read again when it changes, the vault at every token lookup
    # RECHECK_EVERY (under the shortest poll_interval) after the last read.
    print(f"Signed in as {escape_controls(user)}. Saved to {tenant.auth.cache_name}; a running exporter "
          f"uses it from its next poll.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "login":
        return login(args[1:])
    if args and args[0] == "demo":
        from exporter.demo import demo  # the simulator is for the demo only

        return demo(args[1:], settle=tune_process)
    return run(args)
