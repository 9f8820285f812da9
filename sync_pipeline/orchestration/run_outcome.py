"""A run in which some entity did not deliver everything ends as failed, after every entity had its turn.

The check on each entity is non-blocking so that later entities still run; on its own it would
leave the run green, the exit code 0 and Dagster's run-failure sensors silent. So the last entity
of the run's selection, once it has materialized, reads the outcome every earlier entity of the run
recorded on its materialization and fails its step naming each entity that fell short and why.
"""

from collections.abc import Sequence

import dagster as dg

from sync_pipeline.specs.model import EntitySpec

OUTCOME = "outcome"
"""Materialization metadata: `complete`, or why the entity did not deliver everything it selected."""
COMPLETE = "complete"


def selected_entities(context: dg.AssetExecutionContext, specs: Sequence[EntitySpec]) -> list[EntitySpec]:
    """The entities this run materializes, in sync order.

    A run of a subset names its assets, its steps (an asset's step key is its name) or both; a run
    of the whole job names neither.
    """
    assets = context.run.asset_selection
    steps = context.run.step_keys_to_execute
    return [
        spec
        for spec in specs
        if (not assets or dg.AssetKey(spec.asset_name) in assets) and (not steps or spec.asset_name in steps)
    ]


def incomplete_entities(context: dg.AssetExecutionContext, specs: Sequence[EntitySpec]) -> list[str]:
    """`<Entity>: <why>` for each of `specs` whose materialization in this run did not deliver everything."""
    problems: list[str] = []
    for spec in specs:
        event = context.instance.get_latest_materialization_event(dg.AssetKey(spec.asset_name))
        if event is None or event.run_id != context.run.run_id or event.asset_materialization is None:
            continue  # its step failed or was skipped, which fails the run on its own
        outcome = event.asset_materialization.metadata.get(OUTCOME)
        if outcome is not None and outcome.value != COMPLETE:
            problems.append(f"{spec.name}: {outcome.value}")
    return problems


def fail_run_if_incomplete(
    context: dg.AssetExecutionContext, spec: EntitySpec, specs: Sequence[EntitySpec], own_problem: str | None
) -> None:
    """In the run's last selected entity: raise `dg.Failure` naming every entity of the run that fell short."""
    selected = selected_entities(context, specs)
    if not selected or selected[-1] != spec:
        return
    problems = incomplete_entities(context, selected[:-1])
    if own_problem:
        problems.append(f"{spec.name}: {own_problem}")
    if not problems:
        return
    raise dg.Failure(
        description=(
            f"sync incomplete in {len(problems)} of {len(selected)} entities (every selected entity ran; "
            f"what was delivered is tracked): " + "; ".join(problems)
        ),
        metadata={"incomplete_entities": dg.MetadataValue.int(len(problems))},
        allow_retries=False,
    )
