"""`python -m modelshield.local.daemon`: run the local stack in the background until SIGTERM."""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading

from modelshield import config
from modelshield.local.stack import LocalStack, state_dir, state_file


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=None)
    parser.add_argument("--dashboard-port", type=int, default=None)
    args = parser.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    state_dir().mkdir(parents=True, exist_ok=True)
    settings = config.load(config.LocalSettings)
    stack = LocalStack(
        port=args.port,
        dashboard_port=args.dashboard_port,
        persist_to=state_dir(),
        snapshot_seconds=settings.snapshot_seconds,
    ).start()
    try:
        state = {
            "pid": os.getpid(),
            "endpoint": stack.endpoint,
            "env": stack.env,
            "outputs": stack.outputs,
            "restored": stack.restored,
        }
        tmp = state_file().with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(state_file())
        dashboard = stack.outputs.get("dashboard_url")
        print(f"local stack ready at {stack.endpoint}; dashboard at {dashboard}", flush=True)
        stop.wait()
    finally:
        stack.stop()
        state_file().unlink(missing_ok=True)


if __name__ == "__main__":
    main()
