/**
 * Every metric effect-fsm records, in one place. Names are stable; export
 * them with any `@effect/opentelemetry` metrics exporter (`NodeSdk.layer`
 * with a `metricReader`). Metrics marked "by machine" carry a `machine` tag
 * (and `fsm_transitions` an `outcome` tag after it); read one machine's
 * value with the tags in that order:
 *
 * ```ts
 * Metric.value(Metrics.transitions.pipe(Metric.tagged("machine", "order"), Metric.tagged("outcome", "Goto")))
 * ```
 *
 * | name                            | kind      | meaning                                                      |
 * | ------------------------------- | --------- | ------------------------------------------------------------ |
 * | `fsm_transitions`               | counter   | commands decided, by machine and outcome: `Goto` (a create counts as one), `Stay`, `Stop`, `rejected` (no transition, guard, stopped) |
 * | `fsm_conflicts`                 | counter   | commits that lost the sequence-number race to another writer |
 * | `fsm_retries`                   | counter   | commands decided again after a conflict, by machine          |
 * | `fsm_recovery_ms`               | histogram | recovery of an instance from the store (snapshot + replay), by machine |
 * | `fsm_replayed_events`           | counter   | stored events folded into loaded instances, by machine       |
 * | `fsm_snapshots_written`         | counter   | snapshots written (with a commit or by `saveSnapshot`), by machine |
 * | `fsm_snapshot_failures`         | counter   | snapshots due but not written, by machine                    |
 * | `fsm_timeouts_fired`            | counter   | timeout events committed                                     |
 * | `fsm_timeouts_lateness_ms`      | histogram | deadline to commit of a fired timeout, in milliseconds       |
 * | `fsm_timeouts_stale_skipped`    | counter   | timers dropped because their state was left or re-entered    |
 * | `fsm_timeouts_rejected`         | counter   | timers completed because the machine rejected their event    |
 * | `fsm_timeouts_claim_conflicts`  | counter   | claimed timers whose delivery lost a race with another node  |
 * | `fsm_timeouts_retries`          | counter   | failed deliveries scheduled again                            |
 * | `fsm_timeouts_dead_lettered`    | counter   | timers moved to the dead-letter table                        |
 * | `fsm_locks_acquired`            | counter   | instance leases acquired (distributed locking)               |
 * | `fsm_locks_lost`                | counter   | held leases lost (expired or taken over before released)     |
 * | `fsm_fencing_rejected`          | counter   | commits refused because their lease was acquired again since |
 * | `fsm_outbox_dispatched`         | counter   | outbox commands done (handler ran, or event/creation committed) |
 * | `fsm_outbox_failed`             | counter   | failed attempts of outbox commands                           |
 * | `fsm_outbox_retries`            | counter   | failed outbox commands scheduled again                       |
 * | `fsm_outbox_dead_lettered`      | counter   | outbox commands moved to the dead letters                    |
 * | `fsm_outbox_rejected`           | counter   | outbox commands completed because their target rejected them |
 * | `fsm_outbox_latency_ms`         | histogram | commit of a command to the start of its first attempt, in ms  |
 * | `fsm_commit_group_size`         | histogram | commits written together by one group commit of a SQL store   |
 *
 * @since 0.1.0
 */
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import { keys } from "./internal/machineMetrics.js"

/**
 * `fsm_transitions`: every command decided, by `machine` and `outcome`.
 * `Goto`, `Stay` and `Stop` count committed events (a `create` is a
 * `Goto`: its outcome says so); `rejected` counts commands the machine
 * refused (`InvalidTransition`, `GuardRejected`, `InstanceStopped`), which
 * wrote nothing. Timer deliveries and outbox events count like sends.
 *
 * @since 0.1.0
 */
export const transitions = Metric.fromMetricKey(keys.transitions)

/**
 * `fsm_retries`: commands decided again after a `SequenceConflict`, by
 * `machine` (one per retry of the runtime's retry schedule; the conflicts
 * themselves are `fsm_conflicts`).
 *
 * @since 0.1.0
 */
export const retries = Metric.fromMetricKey(keys.retries)

/**
 * `fsm_recovery_ms`: how long recovering an instance that was not loaded
 * took (latest snapshot + replay of the tail), in milliseconds, by `machine`.
 *
 * @since 0.1.0
 */
export const recoveryTime = Metric.fromMetricKey(keys.recoveryTime)

/**
 * `fsm_replayed_events`: stored events folded into loaded instances, by
 * `machine`: the tail replayed by a recovery, and the events of other
 * writers a cached instance caught up with.
 *
 * @since 0.1.0
 */
export const replayedEvents = Metric.fromMetricKey(keys.replayedEvents)

/**
 * `fsm_snapshots_written`: snapshots written, by `machine`: those in a
 * commit (every `snapshotEvery` events) and those of `saveSnapshot`.
 *
 * @since 0.1.0
 */
export const snapshotsWritten = Metric.fromMetricKey(keys.snapshotsWritten)

/**
 * `fsm_snapshot_failures`: snapshots that were due but not written, by
 * `machine`: the state did not encode exactly, a failed commit was appended
 * again without its snapshot, or `saveSnapshot` failed. A failed snapshot
 * never fails a command.
 *
 * @since 0.1.0
 */
export const snapshotFailures = Metric.fromMetricKey(keys.snapshotFailures)

/**
 * `fsm_timeouts_fired`: timeout events committed; their lateness is `fsm_timeouts_lateness_ms`.
 *
 * @since 0.1.0
 */
export const timeoutsFired = Metric.counter("fsm_timeouts_fired", { description: "timeout events committed" })

/**
 * `fsm_timeouts_stale_skipped`: timers dropped because their state was left or re-entered before they fired (a stale generation).
 *
 * @since 0.1.0
 */
export const timeoutsStaleSkipped = Metric.counter("fsm_timeouts_stale_skipped", {
  description: "timers dropped because their state was left or re-entered"
})

/**
 * `fsm_timeouts_rejected`: timers completed because the machine rejected their event.
 *
 * @since 0.1.0
 */
export const timeoutsRejected = Metric.counter("fsm_timeouts_rejected", {
  description: "timers completed because the machine rejected their event"
})

/**
 * `fsm_timeouts_claim_conflicts`: claimed timers whose delivery lost a race with another writer.
 *
 * @since 0.1.0
 */
export const timeoutsClaimConflicts = Metric.counter("fsm_timeouts_claim_conflicts", {
  description: "claimed timers whose delivery lost a race with another writer"
})

/**
 * `fsm_timeouts_retries`: failed deliveries scheduled again.
 *
 * @since 0.1.0
 */
export const timeoutsRetries = Metric.counter("fsm_timeouts_retries", { description: "failed deliveries scheduled again" })

/**
 * `fsm_timeouts_dead_lettered`: timers moved to the dead-letter table.
 *
 * @since 0.1.0
 */
export const timeoutsDeadLettered = Metric.counter("fsm_timeouts_dead_lettered", {
  description: "timers moved to the dead-letter table"
})

/**
 * `fsm_timeouts_lateness_ms`: deadline to commit of a fired timeout, in milliseconds.
 *
 * @since 0.1.0
 */
export const timeoutsLateness = Metric.histogram(
  "fsm_timeouts_lateness_ms",
  MetricBoundaries.exponential({ start: 1, factor: 2, count: 20 }),
  "deadline to commit of a fired timeout, in milliseconds"
)

/**
 * `fsm_conflicts`: commits that lost the sequence-number race to another writer; each
 * is retried under the runtime's retry schedule (`fsm_retries`).
 *
 * @since 0.1.0
 */
export const conflicts = Metric.counter("fsm_conflicts", {
  description: "commits that lost the sequence-number race to another writer"
})

/**
 * `fsm_locks_acquired`: instance leases acquired by the distributed `LockingStrategy`.
 *
 * @since 0.1.0
 */
export const locksAcquired = Metric.counter("fsm_locks_acquired", { description: "instance leases acquired" })

/**
 * `fsm_locks_lost`: held leases lost (expired or taken over before released).
 *
 * @since 0.1.0
 */
export const locksLost = Metric.counter("fsm_locks_lost", {
  description: "held leases lost (expired or taken over before released)"
})

/**
 * `fsm_fencing_rejected`: commits refused because their lease was acquired again since
 * (another node took the instance over).
 *
 * @since 0.1.0
 */
export const fencingRejected = Metric.counter("fsm_fencing_rejected", {
  description: "commits refused because their lease was acquired again since"
})

/**
 * `fsm_outbox_dispatched`: outbox commands done (handler ran, or event or creation committed).
 *
 * @since 0.1.0
 */
export const outboxDispatched = Metric.counter("fsm_outbox_dispatched", {
  description: "outbox commands done (handler ran, or event or creation committed)"
})

/**
 * `fsm_outbox_failed`: failed attempts of outbox commands.
 *
 * @since 0.1.0
 */
export const outboxFailed = Metric.counter("fsm_outbox_failed", { description: "failed attempts of outbox commands" })

/**
 * `fsm_outbox_retries`: failed outbox commands scheduled again.
 *
 * @since 0.1.0
 */
export const outboxRetries = Metric.counter("fsm_outbox_retries", { description: "failed outbox commands scheduled again" })

/**
 * `fsm_outbox_dead_lettered`: outbox commands moved to the dead letters.
 *
 * @since 0.1.0
 */
export const outboxDeadLettered = Metric.counter("fsm_outbox_dead_lettered", {
  description: "outbox commands moved to the dead letters"
})

/**
 * `fsm_outbox_rejected`: outbox commands completed because their target rejected them.
 *
 * @since 0.1.0
 */
export const outboxRejected = Metric.counter("fsm_outbox_rejected", {
  description: "outbox commands completed because their target rejected them"
})

/**
 * `fsm_outbox_latency_ms`: commit of an outbox command to the start of its first attempt, in milliseconds.
 *
 * @since 0.1.0
 */
export const outboxLatency = Metric.histogram(
  "fsm_outbox_latency_ms",
  MetricBoundaries.exponential({ start: 1, factor: 2, count: 20 }),
  "commit of an outbox command to the start of its first attempt, in milliseconds"
)

/**
 * `fsm_commit_group_size`: how many commits each flush of a SQL store's
 * group commit wrote together (1 for a lone writer; up to 256 on
 * PostgreSQL and 128 on SQLite when many instances commit at once). See
 * `SqlEventStore.Options.groupCommit`.
 *
 * @since 0.1.0
 */
export const commitGroupSize = Metric.histogram(
  "fsm_commit_group_size",
  MetricBoundaries.exponential({ start: 1, factor: 2, count: 9 }),
  "commits written together by one group commit of a SQL store"
)
