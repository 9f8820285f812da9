"""One Users sync in its own process, for the crash test to SIGKILL at chosen moments.

Usage: python -m sync_pipeline_tests.fault.crash_worker '<json: {"urls": {...}, "settings": {...}}>'
Prints `ready` once imported, then the report's figures as JSON when it finishes.
"""

from __future__ import annotations

import json
import os
import sys

from sync_pipeline.settings import parse_settings
from sync_pipeline_tests.fault.conftest import sync_users


def main() -> None:
    """Run the sync described by argv[1]."""
    config = json.loads(sys.argv[1])
    settings = parse_settings(config["settings"])
    print("ready", flush=True)
    report = sync_users(config["urls"], settings, owner=f"crash-worker-{os.getpid()}")
    print(json.dumps({"sent": report.sent, "stopped_because": report.stopped_because}), flush=True)


if __name__ == "__main__":
    main()
