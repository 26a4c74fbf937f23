"""The running exporter: one config's pipeline (HTTP client, sources, poller, publisher, server)."""

from __future__ import annotations

import logging
import signal
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from typing import Any

import certifi
import httpx

from exporter import __version__
from exporter.auth import Identity, ScopedTokens, TokenProvider
from exporter.client import ApiClient
from exporter.collectors import REGISTRY, SourceSettings
from exporter.config import Config, ConfigError, TenantConfig, load_config
from exporter.endpoints import Endpoints
from exporter.exposition import Publisher
from exporter.files import CA_BUNDLE_LIMIT, read_text, within
from exporter.http.listen import ListenError, systemd_sockets
from exporter.http.server import DEFAULT_MAX_CONNECTIONS, ExporterServer, ServeOptions
from exporter.logs import REDACTOR
from exporter.model import Snapshot
from exporter.poller import HEARTBEAT, Poller, Source
from exporter.selfmetrics import ProcessMetrics
from exporter.transport import install_deadlines
from exporter.webconfig import WebConfigFile, WebConfigProvider

log = logging.getLogger("exporter")

# How long shutdown waits for token requests in flight: a refresh token the platform already
# rotated is lost unless its response is saved. SIGTERM must still end within 5 s.
TOKEN_SHUTDOWN_GRACE = 3.0
# Sign-ins at start per poll slot. A sign-in is two exchanges (OpenID discovery, token) where a
# poll is one, so with as many sign-ins as polls the polls wait for them: 500 tenants at 200 ms
# took 13.5 s with one lane, 7.5 s with two, 7.8 s with three (bench, polls section).
SIGN_IN_LANES = 2


def build_http_client(config: Config) -> httpx.Client:
    """The one outbound client: shared by MSAL and the API calls, with ca_file and request_timeout
    as the deadline of each whole exchange (exporter.transport)."""
    context = ssl.create_default_context(cafile=certifi.where())
    if config.endpoints.ca_file is not None:
        context.load_verify_locations(cadata=read_text(config.endpoints.ca_file, CA_BUNDLE_LIMIT))
    # Polls and, at start, the sign-ins beside them (App.sign_in_ahead) each hold one.
    pool = config.poll_concurrency * (2 + SIGN_IN_LANES) + 4
    return install_deadlines(httpx.Client(
        timeout=httpx.Timeout(config.request_timeout), verify=context,
        limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
        headers={"User-Agent": f"partnercenter-exporter/{__version__}"}))


def login_command(config_path: str, tenant: str) -> str:
    """The command that signs a tenant in again, as hints quote it."""
    return f"partnercenter-exporter login --config.file={config_path} --tenant={tenant}"


def identity(tenant: TenantConfig, endpoints: Endpoints, *, login: str = "partnercenter-exporter login",
             ) -> Identity:
    """The tenant's sign-in, for Partner Center and (without graph_auth) Graph."""
    return Identity(tenant=tenant.name, tenant_id=tenant.tenant_id, client_id=tenant.client_id,
                    auth=tenant.auth, authority_host=endpoints.authority_host, scope=endpoints.scope,
                    login_command=login)


def graph_identity(tenant: TenantConfig, endpoints: Endpoints) -> Identity:
    """Graph's app-only sign-in from graph_auth, with its own client id if it names one."""
    assert tenant.graph_auth is not None
    return Identity(tenant=tenant.name, tenant_id=tenant.tenant_id,
                    client_id=tenant.graph_client_id or tenant.client_id, auth=tenant.graph_auth,
                    authority_host=endpoints.authority_host, scope=endpoints.graph_scope)


def build_sources(tenant: TenantConfig, config: Config, http: httpx.Client, *,
                  config_path: str = "config.yaml") -> tuple[ApiClient[Any], ...]:
    """One client per collector of the tenant, all on one token provider (one MSAL app, one cache).

    Graph gets its own, in-memory provider only when graph_auth names app-only credentials.
    """
    endpoints = config.endpoints
    tokens = TokenProvider(identity(tenant, endpoints, login=login_command(config_path, tenant.name)),
                           http, on_token=REDACTOR.add_token, keep_secrets=REDACTOR.keep)
    graph_tokens = tokens if tenant.graph_auth is None else TokenProvider(
        graph_identity(tenant, endpoints), http, on_token=REDACTOR.add_token, keep_secrets=REDACTOR.keep)
    settings = SourceSettings(tenant=tenant.name, http=http, endpoints=endpoints, tokens=tokens,
                              graph_tokens=graph_tokens.for_scope(endpoints.graph_scope))
    return tuple(REGISTRY[collector].build(settings) for collector in tenant.collectors)


# /healthz fails (so a liveness probe restarts the process) once the poll loop, which wakes at
# least every HEARTBEAT seconds, has missed this many wake-ups.
WATCHDOG_AFTER = 5 * HEARTBEAT
# Polls that end within a second of each other are published together.
PUBLISH_SPACING = 1.0


def build_poller(config: Config, sources: Sequence[Source], publisher: Publisher, *,
                 retry_initial: float = 15.0) -> Poller:
    """Poll these sources on the config's interval and concurrency, publishing every change."""
    return Poller(sources, interval=config.poll_interval, concurrency=config.poll_concurrency,
                  on_snapshot=publisher.publish, on_tick=publisher.refresh_if_new_day,
                  retry_initial=retry_initial, publish_spacing=PUBLISH_SPACING)


def _shared_settings(config: Config) -> tuple[object, ...]:
    # What the HTTP client and every source are built from; a change means rebuilding them all.
    return config.endpoints, config.request_timeout, config.poll_concurrency


class App:
    """Polls in the background and serves /metrics; `reload` swaps in a new config while running.

    Without a listen address it serves nothing: `poll_once` is then the whole run (`--once`).
    """

    def __init__(self, config: Config, *, config_path: str, listen_address: str | Sequence[str] | None,
                 web: WebConfigProvider | None = None, retry_initial: float = 15.0,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 options: ServeOptions | None = None) -> None:
        self.config = config
        self._config_path = config_path
        self._http = build_http_client(config)
        loaded = ("config", "web") if isinstance(web, WebConfigFile) else ("config",)
        self.publisher = Publisher(config.inactive_thresholds_days, poll_interval=config.poll_interval,
                                   loaded=loaded)
        if isinstance(web, WebConfigFile):
            web.on_reload = lambda ok: self.publisher.loaded("web", ok)
        self._sources = {tenant.name: (tenant, self._build(tenant, config)) for tenant in config.tenants}
        self.poller = build_poller(config, self.sources, self.publisher,
                                   retry_initial=retry_initial)
        self.publisher.publish(self.poller.snapshot())
        self._server: ExporterServer | None = None
        if listen_address is not None:
            options = options or ServeOptions()
            try:
                self._server = ExporterServer(
                    listen_address, self.publisher, web=web, health=self.health,
                    max_connections=max_connections, telemetry_path=options.telemetry_path,
                    process_metrics=ProcessMetrics() if options.exporter_metrics else None,
                    sockets=systemd_sockets() if options.systemd_socket else ())
            except ListenError:
                self._http.close()
                raise
        self._poll_thread = threading.Thread(target=self.poller.run, name="poller", daemon=True)
        self._stopping = False
        self._retired: list[tuple[httpx.Client, tuple[ApiClient[Any], ...]]] = []

    def health(self) -> str | None:
        """Why the process should be restarted, or None: the poll loop ended or stopped waking."""
        thread = self._poll_thread
        if thread.ident is not None and not thread.is_alive() and not self._stopping:
            return "unhealthy: the poll loop has stopped; restart the exporter"
        age = self.poller.heartbeat_age()
        if age > WATCHDOG_AFTER:
            return f"unhealthy: the poll loop has not run for {age:.0f}s; restart the exporter"
        return None

    @property
    def server(self) -> ExporterServer:
        assert self._server is not None, "this App was built without a listen address"
        return self._server

    def _build(self, tenant: TenantConfig, config: Config) -> tuple[ApiClient[Any], ...]:
        return build_sources(tenant, config, self._http, config_path=self._config_path)

    @property
    def sources(self) -> list[ApiClient[Any]]:
        """Every source polled now, tenant by tenant."""
        return [source for _, sources in self._sources.values() for source in sources]

    def start(self) -> None:
        self.server.start()
        self.sign_in_ahead()
        self._poll_thread.start()

    def poll_once(self) -> Snapshot:
        """Poll every source once (no retries), publish, and close the HTTP client."""
        try:
            self.sign_in_ahead()
            return self.poller.poll_all_once()
        finally:
            self._http.close()

    def sign_in_ahead(self) -> None:
        """Sign every tenant in beside the first round, SIGN_IN_LANES x poll_concurrency at a time on
        top of its polls: at a cold start each tenant's OpenID discovery and token request would
        otherwise wait in the polls' slots (500 tenants at 200 ms: 20 s before, 7.5 s since)."""
        # A tenant's first source asks first; its others (and Graph) then find the MSAL app built.
        first: dict[int, TokenProvider | ScopedTokens] = {}
        for _, sources in self._sources.values():
            tokens = sources[0].tokens if sources else None
            if isinstance(tokens, (TokenProvider, ScopedTokens)):
                first[id(tokens)] = tokens
        if not first:
            return

        def sign_in(tokens: TokenProvider | ScopedTokens) -> None:
            if not self._stopping:
                tokens.sign_in_ahead()

        def run() -> None:
            with ThreadPoolExecutor(self.config.poll_concurrency * SIGN_IN_LANES,
                                    thread_name_prefix="sign-in") as pool:
                for tokens in first.values():
                    pool.submit(sign_in, tokens)

        threading.Thread(target=run, name="sign-in", daemon=True).start()

    def reload(self, config: Config) -> None:
        """Apply a new config. Unchanged tenants keep their tokens, data and schedule."""
        rebuild = _shared_settings(config) != _shared_settings(self.config)
        if rebuild:
            # Polls still running finish on the old client; tidy() closes it once they have.
            self._retired.append((self._http, tuple(self.sources)))
            self._http = build_http_client(config)
        sources = {}
        for tenant in config.tenants:
            old = self._sources.get(tenant.name)
            if old is not None and old[0] == tenant and not rebuild:
                sources[tenant.name] = old
                continue
            built = self._build(tenant, config)
            if old is not None:
                # Request counters are counters: they carry on rather than drop to 0.
                counts = {source.collector: source.requests_by_code for source in old[1]}
                for source in built:
                    source.requests_by_code.update(counts.get(source.collector, {}))
            sources[tenant.name] = (tenant, built)
        kept = sum(1 for name, entry in sources.items() if self._sources.get(name) is entry)
        self._sources = sources
        self.config = config
        self.publisher.reconfigure(config.inactive_thresholds_days, poll_interval=config.poll_interval)
        self.poller.reconfigure(self.sources, interval=config.poll_interval,
                                concurrency=config.poll_concurrency)
        log.info("config reloaded", extra={"tenants": len(sources), "unchanged_tenants": kept})

    @property
    def retiring(self) -> bool:
        """Whether HTTP clients retired by a reload still wait to be closed."""
        return bool(self._retired)

    def tidy(self) -> None:
        """Close HTTP clients retired by a reload once no poll or token request still uses them."""
        still = []
        for http, sources in self._retired:
            if any(self.poller.busy(source) or not source.tokens.wait_idle(0) for source in sources):
                still.append((http, sources))
            else:
                http.close()
        self._retired = still

    @property
    def http_client(self) -> httpx.Client:
        """The outbound client in use now."""
        return self._http

    def stop(self) -> None:
        self._stopping = True
        self.poller.stop()
        deadline = time.monotonic() + TOKEN_SHUTDOWN_GRACE
        for source in self.sources:
            if not source.tokens.wait_idle(deadline - time.monotonic()):
                log.warning("stopped while a token request was in flight; if the refresh token "
                            "was rotated, run login again", extra={"tenant": source.name})
            else:
                source.tokens.flush(max(0.5, deadline - time.monotonic()))
        if self._server is not None:
            self._server.shutdown()
        for client in (*(http for http, _ in self._retired), self._http):
            client.close()


class Controls:
    """What signal handlers (or a caller) ask of the serving loop: stop, or load the config again.
    Either wakes the loop; otherwise it sleeps, so an idle exporter has no timer of its own here."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self._reload = threading.Event()
        self._wake = threading.Event()

    def stop(self) -> None:
        self.stopped.set()
        self._wake.set()

    def reload(self) -> None:
        self._reload.set()
        self._wake.set()

    def wait(self, timeout: float | None) -> None:
        """Until stop or reload is asked for, or `timeout` seconds (None: no limit) have passed.
        Cleared before the caller looks, so a request that comes meanwhile wakes the next wait."""
        self._wake.wait(timeout)
        self._wake.clear()

    def take_reload(self) -> bool:
        """Whether a reload was asked for since the last call."""
        asked = self._reload.is_set()
        self._reload.clear()
        return asked


# While a reload's retired HTTP clients wait for their last polls, the loop checks this often.
TIDY_EVERY = 0.2


def run_until(app: App, controls: Controls, load: Callable[[], Config]) -> None:
    """Serve until stopped; on a reload, load the config again, keeping the old one if it is bad."""
    while True:
        controls.wait(TIDY_EVERY if app.retiring else None)
        if controls.stopped.is_set():
            return
        app.tidy()
        if not controls.take_reload():
            continue
        try:
            # Off this thread, which must stay free for SIGTERM: a file on a hung mount blocks.
            config = within(load, "--config.file")
        except Exception as err:
            errors = getattr(err, "errors", None) or [str(err)]
            log.error("config reload failed; still running the previous config",
                      extra={"errors": "; ".join(errors)})
            app.publisher.loaded("config", False)
            continue
        app.reload(config)


def load_configs(config_file: str, web_config_file: str | None,
                 ) -> tuple[Config, WebConfigFile | None]:
    """Both config files, every error of both at once; their secrets join the redactor, and what is
    wrong with a config that still works (a secret file others can read) is logged. Start,
    --config.check, login and SIGHUP's reload all load through here."""
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
    for warning in config.warnings:
        log.warning("config warning", extra={"warning": warning})
    return config, web


def poll_once(config: Config, config_path: str) -> int:
    """`--once`: poll every tenant once, print the exposition, report failures; the exit code."""
    app = App(config, config_path=config_path, listen_address=None)
    snapshot = app.poll_once()
    sys.stdout.buffer.write(app.publisher.current.body)
    sys.stdout.flush()
    failed = [v for v in snapshot.views if not v.last_poll_success]
    for view in failed:
        print(f"error: tenant {view.name}: {view.collector}: {view.last_error_reason}: "
              f"{REDACTOR(view.last_error_message or '')}", file=sys.stderr)
    return 1 if failed else 0


def stop_on_signals(controls: Controls) -> None:
    """SIGTERM and SIGINT stop; SIGHUP loads the config again, as Prometheus does."""
    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("shutting down", extra={"signal": signal.Signals(signum).name})
        controls.stop()

    def handle_reload(signum: int, frame: FrameType | None) -> None:
        log.info("reloading config", extra={"signal": "SIGHUP"})
        controls.reload()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGHUP, handle_reload)


def serve(config: Config, *, config_path: str, listen_address: str | Sequence[str],
          web: WebConfigProvider | None, controls: Controls,
          on_listening: Callable[[ExporterServer], None] | None = None,
          max_connections: int = DEFAULT_MAX_CONNECTIONS, options: ServeOptions | None = None,
          settle: Callable[[], None] = lambda: None) -> int:
    """Run the poller and the HTTP server until `controls` stops them, loading the config again
    on each reload.

    `settle` runs once everything long-lived is built, before the first poll: the entry point's
    process-wide tuning goes there.
    """
    try:
        app = App(config, config_path=config_path, listen_address=listen_address, web=web,
                  max_connections=max_connections, options=options)
    except ListenError as err:
        print(err, file=sys.stderr)
        return 1
    settle()
    app.start()
    log.info("listening", extra={
        "address": app.server.url,
        "listeners": ",".join(host if host.startswith("unix:") else f"[{host}]:{port}" if ":" in host
                              else f"{host}:{port}" for host, port in app.server.addresses),
        "tenants": len(config.tenants), "version": __version__})
    if on_listening is not None:
        on_listening(app.server)
    try:
        run_until(app, controls, lambda: load_configs(config_path, None)[0])
    finally:
        app.stop()
    return 0
