"""`demo`: the built-in simulator and the exporter against it, with zero configuration."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from exporter.app import Controls, load_configs, poll_once, serve, stop_on_signals
from exporter.http.listen import DEFAULT_PORT
from exporter.http.server import ExporterServer
from exporter.logs import add_log_flags, setup_logging
from exporter.simulator import Simulator
from exporter.simulator.scenario import (
    DEMO_COLLECTORS,
    DEMO_GRAPH_THROTTLE_EVERY,
    DEMO_TENANTS,
    write_demo_config,
)


def demo(argv: Sequence[str], *, settle: Callable[[], None] = lambda: None) -> int:
    parser = argparse.ArgumentParser(
        prog="partnercenter-exporter demo",
        description="Run the built-in Partner Center simulator and the exporter against it.")
    parser.add_argument("--web.listen-address", dest="listen_address",
                        default=f"127.0.0.1:{DEFAULT_PORT}",
                        help=f"address to serve /metrics on (default: 127.0.0.1:{DEFAULT_PORT})")
    parser.add_argument("--once", action="store_true",
                        help="poll the simulated tenants once, print the metrics to stdout and exit")
    add_log_flags(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    with tempfile.TemporaryDirectory(prefix="partnercenter-exporter-demo-") as tmp:
        workdir = Path(tmp)
        with Simulator(cert_dir=workdir / "certs", graph_throttle_every=DEMO_GRAPH_THROTTLE_EVERY) as sim:
            config_path = write_demo_config(sim, workdir)
            config, _ = load_configs(str(config_path), None)
            if args.once:
                return poll_once(config, str(config_path))
            controls = Controls()
            stop_on_signals(controls)

            def banner(server: ExporterServer) -> None:
                print(f"""
partnercenter-exporter demo: {len(DEMO_TENANTS)} simulated partner tenants, polled every minute
  collectors:   {", ".join(DEMO_COLLECTORS)}

  metrics:      {server.url}/metrics
  status page:  {server.url}/
  simulator:    {sim.base_url} (CA {sim.certs.ca_file})
  demo config:  {config_path}

Press Ctrl+C to stop.
""", flush=True)

            return serve(config, config_path=str(config_path), listen_address=args.listen_address,
                         web=None, controls=controls, on_listening=banner, settle=settle)


if __name__ == "__main__":
    sys.exit(demo(sys.argv[1:]))
