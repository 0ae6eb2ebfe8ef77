/**
 * The metrics tagged with a machine, and each machine's tagged metrics,
 * built once: a metric tagged per update (`Metric.tagged`) builds a new key
 * and looks it up in the registry every time, while a metric made from a key
 * that already carries its tags finds its state once and keeps it. The
 * public `Metrics` module exports the same keys without tags.
 *
 * @internal
 */
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricKey from "effect/MetricKey"
import * as MetricLabel from "effect/MetricLabel"

export const keys = {
  transitions: MetricKey.counter("fsm_transitions", {
    description: "commands decided, by machine and outcome (Goto, Stay, Stop, rejected)"
  }),
  retries: MetricKey.counter("fsm_retries", {
    description: "commands decided again after a sequence conflict, by machine"
  }),
  recoveryTime: MetricKey.histogram(
    "fsm_recovery_ms",
    MetricBoundaries.exponential({ start: 0.125, factor: 2, count: 24 }),
    "time to recover an instance from the store (snapshot + replay), in milliseconds, by machine"
  ),
  replayedEvents: MetricKey.counter("fsm_replayed_events", {
    description: "stored events folded into loaded instances (recovery and catch-up), by machine"
  }),
  snapshotsWritten: MetricKey.counter("fsm_snapshots_written", {
    description: "snapshots written (with a commit, or by saveSnapshot), by machine"
  }),
  snapshotFailures: MetricKey.counter("fsm_snapshot_failures", {
    description: "snapshots due but not written (state not encodable, or dropped from a failed commit), by machine"
  })
} as const

/** The outcomes `fsm_transitions` counts. */
export type TransitionOutcome = "Goto" | "Stay" | "Stop" | "rejected"

export interface MachineMetrics {
  readonly transitions: { readonly [O in TransitionOutcome]: Metric.Metric.Counter<number> }
  readonly retries: Metric.Metric.Counter<number>
  readonly recoveryTime: Metric.Metric.Histogram<number>
  readonly replayedEvents: Metric.Metric.Counter<number>
  readonly snapshotsWritten: Metric.Metric.Counter<number>
  readonly snapshotFailures: Metric.Metric.Counter<number>
}

const byMachine = new Map<string, MachineMetrics>()

/** The metrics of `machine`, tagged `machine` (and `outcome` for transitions). */
export const machineMetrics = (machine: string): MachineMetrics => {
  let metrics = byMachine.get(machine)
  if (metrics !== undefined) return metrics
  const tag = MetricLabel.make("machine", machine)
  const counter = (key: MetricKey.MetricKey.Counter<number>, ...more: ReadonlyArray<MetricLabel.MetricLabel>) =>
    Metric.fromMetricKey(MetricKey.taggedWithLabels(key, [tag, ...more]))
  const transition = (outcome: TransitionOutcome) => counter(keys.transitions, MetricLabel.make("outcome", outcome))
  metrics = {
    transitions: { Goto: transition("Goto"), Stay: transition("Stay"), Stop: transition("Stop"), rejected: transition("rejected") },
    retries: counter(keys.retries),
    recoveryTime: Metric.fromMetricKey(MetricKey.taggedWithLabels(keys.recoveryTime, [tag])),
    replayedEvents: counter(keys.replayedEvents),
    snapshotsWritten: counter(keys.snapshotsWritten),
    snapshotFailures: counter(keys.snapshotFailures)
  }
  byMachine.set(machine, metrics)
  return metrics
}
