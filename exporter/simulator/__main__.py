"""Run the simulator on its own:
`python -m exporter.simulator [--listen HOST:PORT] [--dir DIR] [--hostile]`."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
from pathlib import Path

from exporter.simulator import Simulator
from exporter.simulator.scenario import write_demo_config


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m exporter.simulator",
                                     description="Serve the fake identity platform and Partner Center.")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default: a free port)")
    parser.add_argument("--dir", default=None, help="where to write the CA, seeds and config.yaml")
    parser.add_argument("--hostile", action="store_true",
                        help="name the first customers of each tenant as a hostile upstream could "
                             "(markup, quotes, a line break, a lone surrogate)")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    if not port.isdigit():
        parser.error(f"--listen: expected HOST:PORT, got {args.listen!r}")
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="pcsim-"))
    workdir.mkdir(parents=True, exist_ok=True)
    with Simulator(host=host.strip("[]") or "127.0.0.1", port=int(port), cert_dir=workdir / "certs") as sim:
        config = write_demo_config(sim, workdir, hostile=args.hostile)
        print(f"simulator: {sim.base_url}\nCA:        {sim.certs.ca_file}\nconfig:    {config}\n"
              f"run:       partnercenter-exporter --config.file={config}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
