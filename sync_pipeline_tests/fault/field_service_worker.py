"""One run of the packaged field-service job in its own process, for the kill test to SIGKILL mid-run.

Usage: python -m sync_pipeline_tests.fault.field_service_worker '<json: the settings>'
(databases and the Praxedo password from the environment, as in production). Prints `ready` once imported.
"""

from __future__ import annotations

import json
import sys

import dagster as dg

from sync_pipeline.demo.field_service_seed import field_service_definitions
from sync_pipeline_tests.field_service import JOB, QUIET


def main() -> None:
    """Run the job under the settings in argv[1]."""
    job = field_service_definitions(json.loads(sys.argv[1])).resolve_job_def(JOB)
    print("ready", flush=True)
    with dg.DagsterInstance.ephemeral() as instance:
        job.execute_in_process(instance=instance, run_config=QUIET, raise_on_error=False)


if __name__ == "__main__":
    main()
