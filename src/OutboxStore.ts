/**
 * Durable outbox rows: the commands that transitions produce, written by
 * `EventStore.append` in the same commit as the event that produced them,
 * and what the outbox dispatcher claims, completes, retries and
 * dead-letters.
 *
 * Like timers, outbox rows live in the same database as the event log; every
 * backend layer that provides an `EventStore` provides the matching
 * `OutboxStore` too. Times are epoch milliseconds taken from Effect's `Clock`
 * by the caller, so `TestClock` drives every backend alike.
 *
 * Words: a *command* is produced by a commit; its *row* is pending until it
 * is *completed* — deleted by the commit of its reply (or of the event it
 * delivers), or by `complete` when its handler returned no reply — or
 * *dead-lettered* after too many failed attempts.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import type { PersistenceError } from "./Errors.js"

/**
 * Identifies one command: the instance and commit (its last event's
 * sequence number) that produced it, and its position in that commit.
 *
 * @since 0.1.0
 */
export interface CommandKey {
  readonly machine: string
  readonly instanceId: string
  readonly seqNr: number
  readonly index: number
}

/**
 * What a command asks for.
 *
 * - `handler`: run the machine's handler for `tag` (`Outbox.handlers`).
 * - `send`: commit event `payload` (tag `tag`) to `target`.
 * - `spawn`: create `target` in state `payload` (tag `tag`).
 *
 * @since 0.1.0
 */
export type CommandKind = "handler" | "send" | "spawn"

/**
 * A command as a commit produces it.
 *
 * @since 0.1.0
 */
export interface NewCommand {
  /** Position in the commit, from 0. */
  readonly index: number
  readonly kind: CommandKind
  /** The command's tag, or the tag of the event (`send`) or state (`spawn`) it carries. */
  readonly tag: string
  /** The encoded command, event or state. */
  readonly payload: unknown
  /** For `send` and `spawn`: the instance it is for. */
  readonly target: { readonly machine: string; readonly instanceId: string } | null
  /** The correlation id of the event that produced it, carried to what it delivers. */
  readonly correlationId: string | null
  /** The fencing token of the lease the producing commit was made under, if any. */
  readonly fenceToken: number | null
}

/**
 * A stored command.
 *
 * @since 0.1.0
 */
export interface CommandRecord extends NewCommand, CommandKey {
  /** Epoch ms of the commit that produced it. */
  readonly createdAt: number
  /** Epoch ms from which it may be claimed (later after a failed attempt). */
  readonly dueAt: number
  /** Failed attempts so far. */
  readonly attempts: number
  readonly lastError: string | null
}

/**
 * A command that failed too often, with the last error.
 *
 * @since 0.1.0
 */
export interface DeadLetter extends CommandRecord {
  readonly failedAt: number
}

/**
 * The outbox changes of one commit, applied with its events as a unit.
 *
 * @since 0.1.0
 */
export interface OutboxChanges {
  /** Commands produced by the commit, keyed by its last event's seqNr. */
  readonly produce: ReadonlyArray<NewCommand>
  /**
   * The command this commit completes (the commit appends its reply, or the
   * event it delivers): it must still be pending (else the commit fails
   * with `StaleCommand` and writes nothing), and it is deleted.
   */
  readonly complete?: CommandKey | undefined
}

/**
 * Options of `claimDue`.
 *
 * @since 0.1.0
 */
export interface ClaimOptions {
  /** Only commands produced by instances of these machines. */
  readonly machines: ReadonlyArray<string>
  /** Epoch ms: commands with `dueAt <= now` whose claim, if any, ended at or before `now`. */
  readonly now: number
  readonly limit: number
  readonly nodeId: string
  /** Epoch ms until which the claimed commands belong to `nodeId`. */
  readonly claimUntil: number
}

/**
 * The outbox store service.
 *
 * @since 0.1.0
 */
export class OutboxStore extends Context.Tag("effect-fsm/OutboxStore")<OutboxStore, {
  /**
   * Claims up to `limit` due commands, oldest first. A command claimed by
   * another node whose claim has not expired is skipped; several nodes
   * calling at once never get the same command.
   */
  readonly claimDue: (options: ClaimOptions) => Effect.Effect<ReadonlyArray<CommandRecord>, PersistenceError>
  /**
   * Extends the claim of `nodeId` on a command it is running; `false` when
   * the command is no longer pending or no longer claimed by `nodeId`.
   */
  readonly extendClaim: (
    command: CommandKey,
    options: { readonly nodeId: string; readonly claimUntil: number }
  ) => Effect.Effect<boolean, PersistenceError>
  /**
   * Deletes the command if it is still pending (and, with `claimedBy`, still
   * claimed by that node: a node whose claim lapsed and was taken over
   * leaves the command to its new holder); `false` when it did nothing.
   */
  readonly complete: (
    command: CommandKey,
    options?: { readonly claimedBy?: string }
  ) => Effect.Effect<boolean, PersistenceError>
  /**
   * Releases the claim of `nodeId`, counts a failed attempt and makes the
   * command due again at `dueAt`; nothing when `nodeId` no longer holds it.
   */
  readonly retryLater: (
    command: CommandKey,
    options: { readonly dueAt: number; readonly error: string; readonly nodeId: string }
  ) => Effect.Effect<void, PersistenceError>
  /**
   * Moves the command to the dead letters with the error (counting the
   * attempt), atomically; nothing when `nodeId` no longer holds its claim.
   */
  readonly deadLetter: (
    command: CommandKey,
    options: { readonly error: string; readonly now: number; readonly nodeId: string }
  ) => Effect.Effect<void, PersistenceError>
  /** The earliest time at which `claimDue` could return one of the machines' commands. */
  readonly nextDueAt: (machines: ReadonlyArray<string>) => Effect.Effect<Option.Option<number>, PersistenceError>
  /** The pending commands an instance produced, oldest first. */
  readonly pending: (machine: string, instanceId: string) => Effect.Effect<ReadonlyArray<CommandRecord>, PersistenceError>
  /** Dead letters of commands produced by a machine's instances, oldest failure first. */
  readonly deadLetters: (machine: string) => Effect.Effect<ReadonlyArray<DeadLetter>, PersistenceError>
  /**
   * Moves a dead letter back to the pending commands, due at `now`, with no
   * attempts counted; `false` when there is no such dead letter.
   */
  readonly redrive: (command: CommandKey, now: number) => Effect.Effect<boolean, PersistenceError>
  /** Deletes a dead letter for good; `false` when there is no such dead letter. */
  readonly discard: (command: CommandKey) => Effect.Effect<boolean, PersistenceError>
}>() {}

/**
 * The idempotency key of a command: the same on every attempt and every
 * node, different for every command. Made of the producing machine,
 * instance, sequence number and index (`%` and `:` escaped in the names, so
 * no two commands share a key whatever their ids contain).
 *
 * @example
 * ```ts
 * OutboxStore.idempotencyKey({ machine: "order", instanceId: "o-1", seqNr: 3, index: 0 }) // "order:o-1:3:0"
 * ```
 *
 * @since 0.1.0
 */
export const idempotencyKey = (command: CommandKey): string =>
  `${escapeKeyPart(command.machine)}:${escapeKeyPart(command.instanceId)}:${command.seqNr}:${command.index}`

// `%` and `:` escaped, nothing else: unambiguous, and never throws (not even on a lone surrogate).
const escapeKeyPart = (part: string) => part.replaceAll("%", "%25").replaceAll(":", "%3A")
