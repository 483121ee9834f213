"""An experiment as the traffic simulator runs it: the real assignment, a true effect per variant.

events/simulator.py knows no experiment (events is the bottom layer); this builds the plain
`SimulatedExperiment` it takes, with the assignment and targeting of `assignment.py` and
`rules.py`, so simulated shoppers get exactly the variants the decide endpoint and the snippet
would give them.
"""

from collections.abc import Mapping

from events.sessionize import device_from_user_agent
from events.simulator import SimulatedExperiment, SimulatedUnit
from notifications.experiments.assignment import unit_id_build, variant_assign
from notifications.experiments.rules import (
    UnitTraits,
    arms_from,
    needs_person_lookup,
    targeting_admits,
)
from notifications.models import Experiment, ExperimentPhase, ExperimentUnit


def simulation_refusal(experiment: Experiment) -> str | None:
    """Why the simulator cannot run `experiment`, or None: it has no session key for a session
    experiment, and no segment membership or score for a simulated visitor."""
    if experiment.phase == 0:
        return "it has never run: start it first"
    if experiment.unit != ExperimentUnit.PERSON:
        return "the simulator runs person experiments only"
    if needs_person_lookup(experiment.targeting):
        return "the simulator cannot evaluate segment or score targeting"
    return None


def simulated_experiment_build(
    *, experiment: Experiment, phase: ExperimentPhase, lifts: Mapping[str, float]
) -> SimulatedExperiment:
    """The phase's variants and holdout as they were, over the phase's window."""
    arms = arms_from(phase.variants)
    targeting = experiment.targeting

    def assign(unit: SimulatedUnit) -> str | None:
        traits = UnitTraits(
            device=device_from_user_agent(unit.user_agent).device or None,
            source=unit.source or None,
            visitor="returning" if unit.is_returning else "new",
        )
        unit_id = unit_id_build(
            unit=experiment.unit, anonymous_id=unit.anonymous_id, user_id=unit.user_id
        )
        if unit_id is None or not targeting_admits(targeting, traits):
            return None
        return variant_assign(
            key=experiment.key,
            phase=phase.number,
            unit_id=unit_id,
            arms=arms,
            holdout_share=phase.holdout_share,
        )

    return SimulatedExperiment(
        key=experiment.key,
        phase=phase.number,
        assign=assign,
        lifts=dict(lifts),
        start=phase.started_at,
        end=phase.ended_at,
    )
