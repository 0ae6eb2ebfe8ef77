/**
 * The checks of a chaos run, made from the log alone: the events table read
 * with plain SQL (no engine code in between), compared with the sends the
 * workers acknowledged. Arming and firing of timers are re-derived from the
 * pure machine (`Machine.step` says whether an event entered a state,
 * `Machine.deadlines` what entering it armed), not from the engine's own
 * timer bookkeeping.
 *
 * - acknowledged_lost: an acknowledged token that is not in the log.
 * - duplicated_events: a token that is in the log more than once (each
 *   extra copy counts once); workers never send a token twice.
 * - ack_mismatch: an acknowledged token found under another instance or
 *   another seqNr than the acknowledgement said.
 * - gaps: a seqNr that does not follow the previous one (per instance,
 *   from 1), or a log that does not start with `@created`.
 * - replay_mismatch: a stored event the machine rejects, or whose stored
 *   state tag is not what the machine gives.
 * - timers_not_fired_once: a timeout event for a deadline that is not armed
 *   (fired already, or the instance left or re-entered the state), a
 *   timeout event without its timer name, one committed before its
 *   deadline, and an arming whose deadline passed while the instance stayed
 *   in the state (to the end of the log, after the drain) without its
 *   timeout event, or that was superseded by a user event more than
 *   `lateGraceMillis` after its deadline.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Either } from "effect"
import { EventStore, Machine } from "effect-fsm"
import type { ChaosEvent, ChaosMachine, ChaosState } from "./shared.js"

export interface Row {
  readonly instanceId: string
  readonly seqNr: number
  readonly tag: string
  readonly payload: unknown
  readonly stateTag: string
  readonly ts: number
  readonly source: string
  readonly timer: string | null
  readonly node: string | null
  readonly commitId: string | null
}

export interface Ack {
  readonly instanceId: string
  readonly token: string
  readonly seqNr: number
  readonly at: number
}

export interface Problem {
  readonly check: string
  readonly instanceId: string
  readonly detail: string
}

export interface Report {
  readonly counts: {
    readonly acknowledged: number
    readonly acknowledged_lost: number
    readonly duplicated_events: number
    readonly ack_mismatch: number
    readonly gaps: number
    readonly replay_mismatch: number
    readonly timers_not_fired_once: number
    /** Informational. */
    readonly events: number
    readonly unacknowledged_committed: number
    readonly armings: number
    readonly timers_fired: number
    readonly timers_cancelled: number
    readonly timers_superseded_after_deadline: number
    readonly timer_lateness_p99_ms: number
    readonly timer_lateness_max_ms: number
  }
  readonly problems: ReadonlyArray<Problem>
}

/** Reads every event of `machine` with plain SQL, in log order. */
export const readEvents = (machine: string) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const rows = yield* sql<Record<string, unknown>>`
      SELECT instance_id, seq_nr, tag, payload, state_tag, ts, source, timer, node, commit_id
      FROM fsm_events WHERE machine = ${machine} ORDER BY instance_id, seq_nr`
    return rows.map((r): Row => ({
      instanceId: String(r.instance_id),
      seqNr: Number(r.seq_nr),
      tag: String(r.tag),
      // jsonb comes back parsed (pg), TEXT as text (SQLite).
      payload: typeof r.payload === "string" ? JSON.parse(r.payload) : r.payload,
      stateTag: String(r.state_tag),
      ts: Number(r.ts),
      source: String(r.source),
      timer: r.timer === null || r.timer === undefined ? null : String(r.timer),
      node: r.node === null || r.node === undefined ? null : String(r.node),
      commitId: r.commit_id === null || r.commit_id === undefined ? null : String(r.commit_id)
    }))
  })

const percentile = (values: ReadonlyArray<number>, p: number) => {
  if (values.length === 0) return 0
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!
}

const describeRow = (r: Row) =>
  `#${r.seqNr} ${r.tag}${r.payload !== null && typeof r.payload === "object" && "token" in r.payload ? ` token=${String((r.payload as { token: unknown }).token)}` : ""} source=${r.source}${r.timer === null ? "" : ` timer=${r.timer}`} -> ${r.stateTag} node=${r.node} ts=${r.ts} commit=${r.commitId}`

export const check = (options: {
  readonly machine: ChaosMachine
  readonly rows: ReadonlyArray<Row>
  readonly acks: ReadonlyArray<Ack>
  /** Every instance the run created. */
  readonly instanceIds: ReadonlyArray<string>
  /** When the drain ended: deadlines before it must have fired. */
  readonly now: number
  readonly lateGraceMillis: number
}): Report => {
  const { machine } = options
  const problems: Array<Problem> = []
  const problem = (check: string, instanceId: string, detail: string) => problems.push({ check, instanceId, detail })

  const byInstance = new Map<string, Array<Row>>()
  for (const row of options.rows) {
    const list = byInstance.get(row.instanceId)
    if (list === undefined) byInstance.set(row.instanceId, [row])
    else list.push(row)
  }

  // --- tokens ---
  const tokenRows = new Map<string, Array<Row>>()
  for (const row of options.rows) {
    const payload = row.payload as { readonly token?: unknown } | null
    if (row.source === "user" && payload !== null && typeof payload === "object" && typeof payload.token === "string") {
      const list = tokenRows.get(payload.token)
      if (list === undefined) tokenRows.set(payload.token, [row])
      else list.push(row)
    }
  }
  let duplicated = 0
  for (const [token, rows] of tokenRows) {
    if (rows.length > 1) {
      duplicated += rows.length - 1
      problem("duplicated_events", rows[0]!.instanceId, `token ${token} is in the log ${rows.length} times: ${rows.map(describeRow).join(" | ")}`)
    }
  }
  let lost = 0
  let mismatch = 0
  const acked = new Set<string>()
  for (const ack of options.acks) {
    acked.add(ack.token)
    const rows = tokenRows.get(ack.token)
    if (rows === undefined) {
      lost++
      problem("acknowledged_lost", ack.instanceId, `token ${ack.token} acknowledged at seqNr ${ack.seqNr} (${new Date(ack.at).toISOString()}) is not in the log`)
    } else if (!rows.some((r) => r.instanceId === ack.instanceId && r.seqNr === ack.seqNr)) {
      mismatch++
      problem("ack_mismatch", ack.instanceId, `token ${ack.token} acknowledged at ${ack.instanceId} #${ack.seqNr}, but the log has ${rows.map((r) => `${r.instanceId} ${describeRow(r)}`).join(" | ")}`)
    }
  }
  let unacknowledged = 0
  for (const token of tokenRows.keys()) if (!acked.has(token)) unacknowledged++

  // --- per instance: sequence, replay, timers ---
  let gaps = 0
  let replayMismatch = 0
  let timerProblems = 0
  let armings = 0
  let fired = 0
  let cancelled = 0
  let supersededLate = 0
  const lateness: Array<number> = []

  for (const id of options.instanceIds) {
    const rows = byInstance.get(id) ?? []
    if (rows.length === 0 || rows[0]!.tag !== EventStore.CreatedTag) {
      gaps++
      problem("gaps", id, rows.length === 0 ? "no events at all" : `log starts with ${describeRow(rows[0]!)}`)
      continue
    }
    let state = rows[0]!.payload as ChaosState
    let expectedSeqNr = 1
    /** The deadlines of the current arming, by name, and whether each fired. */
    let arming: { readonly generation: number; readonly deadlines: Map<string, { dueAt: number; fired: boolean }> } | undefined
    const arm = (row: Row) => {
      const armed = Machine.deadlines(machine, state, row.ts)
      if (Either.isLeft(armed) || armed.right.length === 0) {
        arming = undefined
        return
      }
      armings += armed.right.length
      arming = { generation: row.seqNr, deadlines: new Map(armed.right.map((d) => [d.name, { dueAt: d.dueAt, fired: false }])) }
    }
    /** The current arming ends (the state was left or re-entered) at `row`. */
    const disarm = (row: Row | undefined) => {
      if (arming === undefined) return
      for (const [name, d] of arming.deadlines) {
        if (d.fired) continue
        if (row === undefined) {
          // After the drain no timer row is left, so this deadline will never fire.
          timerProblems++
          problem("timers_not_fired_once", id, `timer ${name} of arming #${arming.generation} (due ${d.dueAt}) never fired; the instance is still in ${state._tag} at the end of the log (${options.now - d.dueAt} ms past the deadline)`)
        } else if (row.ts < d.dueAt) {
          cancelled++
        } else if (row.ts - d.dueAt > options.lateGraceMillis) {
          timerProblems++
          problem("timers_not_fired_once", id, `timer ${name} of arming #${arming.generation} (due ${d.dueAt}) had not fired ${row.ts - d.dueAt} ms after its deadline, when ${describeRow(row)} superseded it`)
        } else {
          supersededLate++
        }
      }
      arming = undefined
    }
    arm(rows[0]!)

    for (const row of rows) {
      if (row.seqNr !== expectedSeqNr) {
        gaps++
        problem("gaps", id, `expected #${expectedSeqNr}, found ${describeRow(row)}`)
      }
      expectedSeqNr = row.seqNr + 1
      if (row.seqNr === 1 && row.tag === EventStore.CreatedTag) continue
      if (row.tag === EventStore.CreatedTag || row.tag === EventStore.StoppedTag) {
        replayMismatch++
        problem("replay_mismatch", id, `unexpected lifecycle record ${describeRow(row)}`)
        continue
      }
      const event = row.payload as ChaosEvent
      if (row.source === "timeout") {
        const deadline = row.timer === null ? undefined : arming?.deadlines.get(row.timer)
        if (row.timer === null) {
          timerProblems++
          problem("timers_not_fired_once", id, `timeout event without its timer name: ${describeRow(row)}`)
        } else if (deadline === undefined) {
          timerProblems++
          problem("timers_not_fired_once", id, `timeout event for a deadline that is not armed (state ${state._tag}, arming ${arming === undefined ? "none" : `#${arming.generation}`}): ${describeRow(row)}`)
        } else if (deadline.fired) {
          timerProblems++
          problem("timers_not_fired_once", id, `timer ${row.timer} of arming #${arming!.generation} fired a second time: ${describeRow(row)}`)
        } else {
          deadline.fired = true
          fired++
          lateness.push(row.ts - deadline.dueAt)
          if (row.ts < deadline.dueAt) {
            timerProblems++
            problem("timers_not_fired_once", id, `timer ${row.timer} of arming #${arming!.generation} fired ${deadline.dueAt - row.ts} ms before its deadline: ${describeRow(row)}`)
          }
        }
      }
      const decision = Machine.step(machine, state, event)
      if (decision._tag !== "Goto" && decision._tag !== "Stay") {
        replayMismatch++
        problem("replay_mismatch", id, `the machine gives ${decision._tag} for ${describeRow(row)} in ${state._tag}`)
        continue
      }
      if (decision.state._tag !== row.stateTag) {
        replayMismatch++
        problem("replay_mismatch", id, `the machine gives ${decision.state._tag} for ${describeRow(row)}`)
      }
      if (decision._tag === "Goto") {
        disarm(row)
        state = decision.state
        arm(row)
      } else {
        state = decision.state
      }
    }
    disarm(undefined)
  }

  return {
    counts: {
      acknowledged: options.acks.length,
      acknowledged_lost: lost,
      duplicated_events: duplicated,
      ack_mismatch: mismatch,
      gaps,
      replay_mismatch: replayMismatch,
      timers_not_fired_once: timerProblems,
      events: options.rows.length,
      unacknowledged_committed: unacknowledged,
      armings,
      timers_fired: fired,
      timers_cancelled: cancelled,
      timers_superseded_after_deadline: supersededLate,
      timer_lateness_p99_ms: percentile(lateness, 0.99),
      timer_lateness_max_ms: lateness.length === 0 ? 0 : Math.max(...lateness)
    },
    problems
  }
}
