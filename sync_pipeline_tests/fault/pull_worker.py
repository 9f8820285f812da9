"""Runs of the Zuora pull, each forked from one process that has imported and declared the pull already, so
the kill test can SIGKILL many runs at chosen moments without paying Dagster's imports for each.

Usage: python -m sync_pipeline_tests.fault.pull_worker '<json: {"address": host:port, "settings": {...},
"customers": [...]}>', the databases and the key in the environment. Prints `ready` once the pull is
declared; then, for each customer named on a line of stdin, forks a run of that customer's partition,
prints `started <pid>`, and when the run's process ends `ended <pid> <exit code>` (-9: killed). The
runs' logs go to stderr.
"""

from __future__ import annotations

import importlib
import json
import os
import sys

import dagster as dg

from sync_pipeline.demo.zuora_seed import zuora_definitions, zuora_settings
from sync_pipeline_tests.fault.zuora_pull import JOB, PARTITIONS


def main() -> None:
    """Declare the packaged pull with the settings of argv[1], then run each customer stdin names in a process of
    its own."""
    config = json.loads(sys.argv[1])
    job = zuora_definitions(zuora_settings(config["address"], config["settings"])).resolve_job_def(JOB)
    # What every run would import on its own, imported once here: an instance's storage, the OAuth client.
    dg.DagsterInstance.ephemeral().dispose()
    importlib.import_module("sync_pipeline.engine.http.oauth")
    print("ready", flush=True)
    for line in sys.stdin:
        pid = os.fork()  # no thread runs yet in this process: the child has all it needs
        if pid == 0:
            os._exit(run(job, config["customers"], line.strip()))
        print(f"started {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"ended {pid} {os.waitstatus_to_exitcode(status)}", flush=True)


def run(job: dg.JobDefinition, customers: list[str], customer: str) -> int:
    """One run of the customer's partition on an instance of its own; 0 when it succeeded."""
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions(PARTITIONS, customers)
        result = job.execute_in_process(instance=instance, partition_key=customer, raise_on_error=False)
    sys.stderr.flush()
    return 0 if result.success else 1


if __name__ == "__main__":
    main()
