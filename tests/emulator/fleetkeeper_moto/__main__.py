"""Runs the moto server with fleetkeeper's patch layer.

    python -m fleetkeeper_moto --port 0 --port-file PATH

Port 0 picks a free port; the chosen one is written to ``--port-file`` once
the server listens. SIGTERM and SIGINT stop it at once.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from . import apply
from .control import ControlApp


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", help="write the listening port here")
    args = parser.parse_args(argv)

    patches = apply()
    app = ControlApp(DomainDispatcherApplication(create_backend_app), patches)
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    os.environ.setdefault("MOTO_PORT", str(server.server_port))

    def stop(signum: int, frame: Any) -> None:
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(server.server_port))
        os.replace(tmp, args.port_file)
    print(f"fleetkeeper emulator on http://{args.host}:{server.server_port} with {len(patches)} patches", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
