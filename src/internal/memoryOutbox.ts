/**
 * The outbox of the in-memory database: pending commands and dead letters,
 * kept as the SQL tables keep them (payloads as JSON text). The memory
 * `append` checks and prepares a commit's outbox changes first (`prepare`)
 * and applies them in the same synchronous step as its events (`apply`).
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { PersistenceError } from "../Errors.js"
import type * as OutboxStore from "../OutboxStore.js"

interface MemoryCommand {
  readonly machine: string
  readonly instanceId: string
  readonly seqNr: number
  readonly index: number
  readonly kind: OutboxStore.CommandKind
  readonly tag: string
  readonly payload: string
  readonly target: { readonly machine: string; readonly instanceId: string } | null
  readonly correlationId: string | null
  readonly fenceToken: number | null
  readonly createdAt: number
  readonly dueAt: number
  readonly attempts: number
  readonly lastError: string | null
  readonly claimedBy: string | null
  readonly claimedUntil: number | null
}

interface MemoryDeadLetter extends MemoryCommand {
  readonly failedAt: number
}

const keyOf = (key: OutboxStore.CommandKey) => `${key.machine}\u0000${key.instanceId}\u0000${key.seqNr}\u0000${key.index}`

const record = (row: MemoryCommand): OutboxStore.CommandRecord => ({
  machine: row.machine,
  instanceId: row.instanceId,
  seqNr: row.seqNr,
  index: row.index,
  kind: row.kind,
  tag: row.tag,
  payload: JSON.parse(row.payload),
  target: row.target === null ? null : { machine: row.target.machine, instanceId: row.target.instanceId },
  correlationId: row.correlationId,
  fenceToken: row.fenceToken,
  createdAt: row.createdAt,
  dueAt: row.dueAt,
  attempts: row.attempts,
  lastError: row.lastError
})

/** Oldest first, then in key order: the order the SQL stores return. */
const byDue = (a: MemoryCommand, b: MemoryCommand) =>
  a.dueAt - b.dueAt || compare(a.machine, b.machine) || compare(a.instanceId, b.instanceId) || a.seqNr - b.seqNr ||
  a.index - b.index

const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0)

export const makeMemoryOutbox = () => {
  /** Insertion order is kept; claims sort. */
  const pending = new Map<string, MemoryCommand>()
  const dead = new Map<string, MemoryDeadLetter>()

  /** Whether `complete` names a pending command. */
  const isPending = (complete: OutboxStore.CommandKey | undefined) =>
    complete === undefined || pending.has(keyOf(complete))

  /** The rows `changes` produce, JSON-encoded; a failure when a payload is not JSON. */
  const prepare = (
    changes: OutboxStore.OutboxChanges,
    producer: { readonly machine: string; readonly instanceId: string; readonly seqNr: number; readonly createdAt: number }
  ): ReadonlyArray<MemoryCommand> | PersistenceError => {
    const rows: Array<MemoryCommand> = []
    for (const command of changes.produce) {
      let payload: string | undefined
      try {
        payload = JSON.stringify(command.payload)
      } catch {
        payload = undefined
      }
      if (payload === undefined) {
        return new PersistenceError({ operation: "append", reason: `the payload of command ${command.tag} is not JSON-serializable` })
      }
      rows.push({
        machine: producer.machine,
        instanceId: producer.instanceId,
        seqNr: producer.seqNr,
        index: command.index,
        kind: command.kind,
        tag: command.tag,
        payload,
        target: command.target === null ? null : { machine: command.target.machine, instanceId: command.target.instanceId },
        correlationId: command.correlationId,
        fenceToken: command.fenceToken,
        createdAt: producer.createdAt,
        dueAt: producer.createdAt,
        attempts: 0,
        lastError: null,
        claimedBy: null,
        claimedUntil: null
      })
    }
    return rows
  }

  /** Applies prepared rows and the completion, synchronously. */
  const apply = (rows: ReadonlyArray<MemoryCommand>, complete: OutboxStore.CommandKey | undefined) => {
    if (complete !== undefined) pending.delete(keyOf(complete))
    for (const row of rows) pending.set(keyOf(row), row)
  }

  const claimable = (row: MemoryCommand, machines: ReadonlyArray<string>, now: number) =>
    machines.includes(row.machine) && row.dueAt <= now && (row.claimedUntil === null || row.claimedUntil <= now)

  const store: OutboxStore.OutboxStore["Type"] = {
    claimDue: (options) =>
      Effect.sync(() => {
        const due = [...pending.values()].filter((row) => claimable(row, options.machines, options.now)).sort(byDue)
          .slice(0, Math.max(0, Math.floor(options.limit)))
        for (const row of due) {
          pending.set(keyOf(row), { ...row, claimedBy: options.nodeId, claimedUntil: options.claimUntil })
        }
        return due.map(record)
      }),
    extendClaim: (command, options) =>
      Effect.sync(() => {
        const row = pending.get(keyOf(command))
        if (row === undefined || row.claimedBy !== options.nodeId) return false
        pending.set(keyOf(command), { ...row, claimedUntil: options.claimUntil })
        return true
      }),
    complete: (command, options) =>
      Effect.sync(() => {
        const row = pending.get(keyOf(command))
        if (row === undefined || (options?.claimedBy !== undefined && row.claimedBy !== options.claimedBy)) return false
        return pending.delete(keyOf(command))
      }),
    retryLater: (command, options) =>
      Effect.sync(() => {
        const row = pending.get(keyOf(command))
        if (row === undefined || row.claimedBy !== options.nodeId) return
        pending.set(keyOf(command), {
          ...row,
          dueAt: options.dueAt,
          attempts: row.attempts + 1,
          lastError: options.error,
          claimedBy: null,
          claimedUntil: null
        })
      }),
    deadLetter: (command, options) =>
      Effect.sync(() => {
        const key = keyOf(command)
        const row = pending.get(key)
        if (row === undefined || row.claimedBy !== options.nodeId) return
        pending.delete(key)
        dead.set(key, {
          ...row,
          attempts: row.attempts + 1,
          lastError: options.error,
          claimedBy: null,
          claimedUntil: null,
          failedAt: options.now
        })
      }),
    nextDueAt: (machines) =>
      Effect.sync(() => {
        let next: number | undefined
        for (const row of pending.values()) {
          if (!machines.includes(row.machine)) continue
          const claimableAt = Math.max(row.dueAt, row.claimedUntil ?? 0)
          if (next === undefined || claimableAt < next) next = claimableAt
        }
        return Option.fromNullable(next)
      }),
    pending: (machine, instanceId) =>
      Effect.sync(() =>
        [...pending.values()].filter((row) => row.machine === machine && row.instanceId === instanceId).sort((a, b) =>
          a.seqNr - b.seqNr || a.index - b.index
        ).map(record)
      ),
    deadLetters: (machine) =>
      Effect.sync(() =>
        [...dead.values()].filter((row) => row.machine === machine).sort((a, b) =>
          a.failedAt - b.failedAt || byDue(a, b)
        ).map((row) => ({ ...record(row), failedAt: row.failedAt }))
      ),
    redrive: (command, now) =>
      Effect.sync(() => {
        const key = keyOf(command)
        const letter = dead.get(key)
        if (letter === undefined) return false
        dead.delete(key)
        const { failedAt: _, ...row } = letter
        pending.set(key, { ...row, dueAt: now, attempts: 0, claimedBy: null, claimedUntil: null })
        return true
      }),
    discard: (command) => Effect.sync(() => dead.delete(keyOf(command)))
  }

  return { isPending, prepare, apply, store }
}
