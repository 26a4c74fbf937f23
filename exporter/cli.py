"""Command line: flags in the Prometheus exporter style, and the wiring from config to server."""

from __future__ import annotations

import argparse
import errno
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

from exporter import __version__
from exporter.app import App, build_http_client, build_poller, build_sources, run_until
from exporter.auth import DEFAULT_REDIRECT_URI, LOGIN_FLOWS, LoginError, interactive_login
from exporter.collector import Publisher
from exporter.config import Config, ConfigError, load_config
from exporter.logs import LEVELS, REDACTOR, setup_logging
from exporter.model import Snapshot
from exporter.server import DEFAULT_LISTEN_ADDRESS, DEFAULT_MAX_CONNECTIONS, ExporterServer
from exporter.webconfig import WebConfigFile, WebConfigProvider

log = logging.getLogger("exporter")

DEFAULT_CONFIG_FILE = "partnercenter-exporter.yml"
EXIT_CONFIG = 2


def add_log_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log.level", dest="log_level", choices=list(LEVELS), default="info",
                        help="log level (default: info)")
    parser.add_argument("--log.format", dest="log_format", choices=["logfmt", "json"],
                        default="logfmt", help="log format (default: logfmt)")


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="partnercenter-exporter",
        description="Prometheus exporter for Microsoft Partner Center delegated admin (DAP) "
                    "statistics. Subcommands: `login` (Secure Application Model sign-in) and "
                    "`demo` (runs against the built-in simulator).")
    parser.add_argument("--config.file", dest="config_file", default=DEFAULT_CONFIG_FILE,
                        help=f"path to the YAML config (default: {DEFAULT_CONFIG_FILE})")
    parser.add_argument("--web.listen-address", dest="listen_address",
                        default=DEFAULT_LISTEN_ADDRESS,
                        help=f"address to serve /metrics on (default: {DEFAULT_LISTEN_ADDRESS})")
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
                        version=f"partnercenter-exporter {__version__}")
    add_log_flags(parser)
    return parser


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text[:20]!r}")
    return int(text)


def load_configs(config_file: str, web_config_file: str | None,
                 ) -> tuple[Config, WebConfigFile | None]:
    errors: list[str] = []
    config = web = None
    try:
        config = load_config(config_file)
    except ConfigError as err:
        errors += err.errors
    if web_config_file:
        try:
            web = WebConfigFile(web_config_file)
        except ConfigError as err:
            errors += [f"web.config.file: {line}" if not line.startswith("web.config.file")
                       else line for line in err.errors]
    if errors or config is None:
        raise ConfigError(errors)
    for value in config.secret_values():
        REDACTOR.add_secret(value)
    return config, web


def stop_on_signals(stop: threading.Event, reload: threading.Event | None = None) -> None:
    """SIGTERM and SIGINT set `stop`; SIGHUP sets `reload`, as Prometheus does."""
    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        stop.set()

    def handle_reload(signum: int, frame: FrameType | None) -> None:
        log.info("reloading config", extra={"signal": "SIGHUP"})
        assert reload is not None
        reload.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    if reload is not None:
        signal.signal(signal.SIGHUP, handle_reload)


def serve(config: Config, *, config_path: str, listen_address: str, web: WebConfigProvider | None,
          stop: threading.Event, reload: threading.Event | None = None,
          on_listening: Callable[[ExporterServer], None] | None = None,
          max_connections: int = DEFAULT_MAX_CONNECTIONS) -> int:
    """Run the poller and the HTTP server until `stop` is set; reload the config on `reload`."""
    try:
        app = App(config, config_path=config_path, listen_address=listen_address, web=web,
                  max_connections=max_connections)
    except OSError as err:
        reason = "is already in use" if err.errno == errno.EADDRINUSE else f"cannot be used: {err.strerror}"
        print(f"--web.listen-address: {listen_address} {reason}; choose another address",
              file=sys.stderr)
        return 1
    app.start()
    log.info("listening", extra={"address": app.server.url, "tenants": len(config.tenants),
                                 "version": __version__})
    if on_listening is not None:
        on_listening(app.server)
    try:
        run_until(app, stop, reload or threading.Event(),
                  lambda: load_configs(config_path, None)[0])
    finally:
        app.stop()
    return 0


def _once(config: Config, config_path: str) -> int:
    with build_http_client(config) as http:
        publisher = Publisher(config.inactive_thresholds_days, poll_interval=config.poll_interval)
        sources = [source for tenant in config.tenants
                   for source in build_sources(tenant, config, http, config_path)]
        snapshot: Snapshot = build_poller(config, sources, publisher).poll_all_once()
    sys.stdout.buffer.write(publisher.current.body)
    sys.stdout.flush()
    failed = [t for t in snapshot.tenants if not t.last_poll_success]
    for view in failed:
        print(f"error: tenant {view.name}: {view.collector}: {view.last_error_reason}: "
              f"{REDACTOR(view.last_error_message or '')}", file=sys.stderr)
    return 1 if failed else 0


def run(argv: Sequence[str]) -> int:
    args = _run_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        config, web = load_configs(args.config_file, args.web_config_file)
    except ConfigError as err:
        for line in err.errors:
            print(REDACTOR(line), file=sys.stderr)
        return EXIT_CONFIG
    if args.config_check:
        print("OK")
        return 0
    if args.once:
        return _once(config, args.config_file)
    stop, reload = threading.Event(), threading.Event()
    stop_on_signals(stop, reload)
    return serve(config, config_path=args.config_file, listen_address=args.listen_address,
                 web=web, stop=stop, reload=reload, max_connections=args.max_connections)


def login(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="partnercenter-exporter login",
        description="Sign in once, interactively and with MFA, and store the rotating refresh token "
                    "in the tenant's token_cache_file.")
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
    try:
        config, _ = load_configs(args.config_file, None)
    except ConfigError as err:
        for line in err.errors:
            print(REDACTOR(line), file=sys.stderr)
        return EXIT_CONFIG
    tenant = next((t for t in config.tenants if t.name == args.tenant), None)
    if tenant is None:
        names = ", ".join(t.name for t in config.tenants)
        print(f"--tenant: no tenant named {args.tenant!r} in {args.config_file}; known: {names}",
              file=sys.stderr)
        return EXIT_CONFIG
    try:
        with build_http_client(config) as http:
            user = interactive_login(tenant, config.endpoints, http, config_path=args.config_file,
                                     out=sys.stdout, flow=args.flow, redirect_uri=args.redirect_uri)
    except LoginError as err:
        print(f"login failed: {REDACTOR(str(err))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("login cancelled", file=sys.stderr)
        return 130
    print(f"Signed in as {user}. Token cache written to {tenant.auth.token_cache_file}; "
          f"the exporter uses it from its next poll.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "login":
        return login(args[1:])
    if args and args[0] == "demo":
        from exporter.demo import demo

        return demo(args[1:])
    return run(args)
