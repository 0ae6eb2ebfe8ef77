/**
 * Durable side effects: the commands that transitions produce, their
 * handlers, and the dispatcher that runs them.
 *
 * A transition (its `commands`) and the entry of a state (the definition's
 * `commands`) produce commands, built purely by the core. They are rows of
 * the outbox (`OutboxStore`) written in the same atomic commit as the event:
 * a command exists exactly when its event does. A dispatcher on every node
 * claims due rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL, with a claim
 * lease renewed when a command starts late and while its handler runs, at
 * most `concurrency` at once) and runs each command at least once, in no
 * particular order:
 *
 * - one of the machine's own commands runs its handler (`Outbox.handlers`)
 *   with an idempotency key that is the same on every attempt; a handler may
 *   return an event for its own instance, which is committed through the
 *   normal send path (`source: "outbox"`) together with the completion of
 *   the command — exactly one reply per command, however often the handler
 *   ran;
 * - a built-in `Machine.sendTo` commits its event to the target instance,
 *   and a `Machine.spawn` creates the target instance, each in the same
 *   commit as the completion: exactly once, with the correlation id of the
 *   event that produced it.
 *
 * A failed attempt is retried on the `retry` Schedule (from the command's
 * failures so far); when the schedule is done the command moves to the dead
 * letters with its last error, to be listed, re-driven or discarded.
 *
 * Entry and exit actions stay for cheap, best-effort work (at most once:
 * they run in the committing process after the commit, and a crash loses
 * them); what must happen belongs here.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as ScheduleDecision from "effect/ScheduleDecision"
import * as Intervals from "effect/ScheduleIntervals"
import type * as Scope from "effect/Scope"
import { InvalidConfiguration, type PersistenceError } from "./Errors.js"
import { nowMillis } from "./internal/clock.js"
import { describeValue, storableText } from "./internal/describe.js"
import { durationMillis } from "./internal/options.js"
import { makePoller } from "./internal/poller.js"
import type * as Machine from "./Machine.js"
import * as Metrics from "./Metrics.js"
import * as OutboxStore from "./OutboxStore.js"

// ---------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------

/**
 * What a handler is told about the command it runs.
 *
 * @since 0.1.0
 */
export interface CommandContext {
  /** The machine and instance that produced the command. */
  readonly machine: string
  readonly instanceId: string
  /** Sequence number of the event whose commit produced the command. */
  readonly seqNr: number
  /** Position of the command in that commit. */
  readonly index: number
  /**
   * The same on every attempt, on every node; pass it to the service the
   * handler calls (a payment provider's idempotency key) so that a retry
   * after a crash does not charge twice.
   */
  readonly idempotencyKey: string
  /** 1 for the first attempt. */
  readonly attempt: number
  readonly correlationId: string | null
  /**
   * The fencing token of the instance's lease when the command was
   * committed (distributed locking), for services that refuse stale
   * writers; `null` without a lease.
   */
  readonly fencingToken: number | null
  /** Epoch ms of the commit that produced the command. */
  readonly createdAt: number
}

/**
 * The handlers of one machine's commands: one per command tag, each an
 * Effect that may return an event for the instance that produced the command
 * (its reply) or nothing. A failure (or a defect) is retried.
 *
 * @since 0.1.0
 */
export type HandlersOf<M> = {
  readonly [K in Machine.CommandOf<M>["_tag"]]: (
    command: Machine.Of<Machine.CommandOf<M>, K>,
    context: CommandContext
  ) => Effect.Effect<Machine.EventOf<M> | void, unknown, any>
}

type HandlerRequirements<H> = {
  [K in keyof H]-?: H[K] extends (...args: ReadonlyArray<never>) => Effect.Effect<unknown, unknown, infer R> ? R : never
}[keyof H]

/**
 * The identifier of every handler set in a context (one per machine, each
 * under its own key).
 *
 * @since 0.1.0
 */
export interface Handlers {
  readonly _: unique symbol
}

/**
 * A machine's handlers as the runtime finds them, with their requirements
 * already provided.
 *
 * @since 0.1.0
 */
export interface HandlerSet {
  readonly machine: string
  readonly handlers: ReadonlyMap<string, (command: unknown, context: CommandContext) => Effect.Effect<unknown, unknown>>
}

/**
 * The context key of one machine's handler set.
 *
 * @since 0.1.0
 */
export const handlersTag = (machine: string): Context.Tag<Handlers, HandlerSet> =>
  Context.GenericTag<Handlers, HandlerSet>(`effect-fsm/Outbox/Handlers/${machine}`)

/**
 * The handlers of a machine's commands, as a layer for the runtime. Every
 * command tag needs one (a missing one does not compile, and the runtime
 * layer fails to build without it); their requirements are the layer's.
 *
 * @example
 * ```ts
 * const OrderHandlers = Outbox.handlers(Order, {
 *   ChargeCard: (command, { idempotencyKey }) =>
 *     Effect.map(Payments.charge(command.amount, idempotencyKey), (ok) =>
 *       ok ? { _tag: "PaymentSucceeded" } : { _tag: "PaymentFailed" }),
 *   SendConfirmation: (command) => Mailer.send(command.email)
 * })
 * ```
 *
 * @since 0.1.0
 */
export const handlers = <M extends Machine.Any, const H extends HandlersOf<M>>(
  machine: M,
  handlers: H
): Layer.Layer<Handlers, never, HandlerRequirements<H>> =>
  Layer.effect(
    handlersTag(machine.name),
    Effect.map(Effect.context<HandlerRequirements<H>>(), (context) => {
      const map = new Map<string, (command: unknown, context: CommandContext) => Effect.Effect<unknown, unknown>>()
      for (const [tag, handler] of Object.entries(handlers as Record<string, unknown>)) {
        if (typeof handler !== "function") continue
        const run = handler as (command: unknown, ctx: CommandContext) => Effect.Effect<unknown, unknown, unknown>
        map.set(tag, (command, ctx) =>
          Effect.suspend(() => run(command, ctx)).pipe(Effect.provide(context as Context.Context<unknown>)) as Effect.Effect<
            unknown,
            unknown
          >)
      }
      return { machine: machine.name, handlers: map }
    })
  )

// ---------------------------------------------------------------------------
// Dispatcher options
// ---------------------------------------------------------------------------

/**
 * The default retry schedule: exponential from 1 second, each delay at most
 * 5 minutes, 10 attempts in all; then the command is dead-lettered.
 *
 * @since 0.1.0
 */
export const defaultRetry: Schedule.Schedule<unknown, string> = Schedule.exponential("1 second").pipe(
  Schedule.modifyDelay((_, delay) => Duration.min(delay, Duration.minutes(5))),
  Schedule.intersect(Schedule.recurs(9))
)

/**
 * Options of the dispatcher.
 *
 * @since 0.1.0
 */
export interface DispatcherOptions {
  /**
   * How failed attempts are retried: the schedule is stepped once per
   * failure so far (its input is the error text), from the command's
   * creation; its delay is how long the command waits, and when it is done
   * the command is dead-lettered. Default `Outbox.defaultRetry`.
   */
  readonly retry?: Schedule.Schedule<unknown, string>
  /** Time between polls while commands keep coming. Default 500 ms. */
  readonly pollInterval?: Duration.DurationInput
  /** Longest time between polls when idle; the interval doubles up to it. Default 2 seconds. */
  readonly maxIdleInterval?: Duration.DurationInput
  /** Random extra delay added to an idle wait, as a fraction of the interval. Default 0.1. */
  readonly jitter?: number
  /** Commands claimed per poll. Default 100. */
  readonly batchSize?: number
  /**
   * Commands run at once, at most: a poll claims only as many as there are
   * free places, once at least half of them (or `batchSize`) are free, and
   * does not wait for a full batch's commands. Default 16.
   */
  readonly concurrency?: number
  /**
   * How long a claim protects a command from other nodes. It is refreshed
   * when the command starts more than a sixth of it after the claim (a
   * slow batch read of its instances) and, while the handler runs, once it
   * is a third of it old (the dispatcher looks every sixth of it: a claim
   * is refreshed at most half a lease after the last time), so a slow
   * handler is not run twice at once. Default 30 seconds.
   */
  readonly claimLease?: Duration.DurationInput
  /**
   * Longest time a poll waits for the commands of a batch that emptied the
   * backlog before it goes on without them (a full batch is not waited
   * for); commands still running then are reported (a warning in the log)
   * and keep running, their claims refreshed. Must be shorter than
   * `claimLease`. Default 10 seconds, or half the claim lease when shorter.
   */
  readonly commandTimeout?: Duration.DurationInput
  /**
   * `false`: this node writes commands but dispatches none (an API-only
   * node); another node's dispatcher runs them. Default `true`.
   */
  readonly dispatch?: boolean
}

/**
 * Resolved dispatcher options.
 *
 * @since 0.1.0
 */
export interface DispatcherConfig {
  readonly retry: Schedule.Schedule<unknown, string>
  readonly pollMillis: number
  readonly maxIdleMillis: number
  readonly jitter: number
  readonly batchSize: number
  readonly concurrency: number
  readonly leaseMillis: number
  readonly commandMillis: number
  readonly dispatch: boolean
}

/**
 * The dispatcher's options, when a layer gives them; the runtime uses the
 * defaults otherwise.
 *
 * @since 0.1.0
 */
export class Dispatcher extends Context.Tag("effect-fsm/Outbox/Dispatcher")<Dispatcher, DispatcherConfig>() {}

const component = "Outbox"

const invalid = (option: string, reason: string) => Effect.fail(new InvalidConfiguration({ component, option, reason }))

const count = (option: string, input: unknown, fallback: number, min: number) =>
  input === undefined
    ? Effect.succeed(fallback)
    : typeof input === "number" && Number.isSafeInteger(input) && input >= min
    ? Effect.succeed(input)
    : invalid(option, `must be a whole number >= ${min}, got ${describeValue(input)}`)

const millis = (option: string, input: unknown, fallback: number) => durationMillis(component, option, input, fallback)

/**
 * Checks dispatcher options; `InvalidConfiguration` names the first unusable one.
 *
 * @since 0.1.0
 */
export const resolveOptions = (options: DispatcherOptions = {}): Effect.Effect<DispatcherConfig, InvalidConfiguration> =>
  Effect.gen(function*() {
    if (typeof options !== "object" || options === null) return yield* invalid("options", "must be an object")
    const retry = options.retry ?? defaultRetry
    if (!Schedule.isSchedule(retry)) return yield* invalid("retry", `must be a Schedule, got ${describeValue(retry)}`)
    const pollMillis = yield* millis("pollInterval", options.pollInterval, 500)
    const maxIdleMillis = yield* millis("maxIdleInterval", options.maxIdleInterval, 2000)
    if (maxIdleMillis < pollMillis) return yield* invalid("maxIdleInterval", `must not be below pollInterval (${pollMillis} ms)`)
    const jitter = options.jitter ?? 0.1
    if (typeof jitter !== "number" || !Number.isFinite(jitter) || jitter < 0 || jitter > 10) {
      return yield* invalid("jitter", `must be a number from 0 to 10, got ${describeValue(jitter)}`)
    }
    const batchSize = yield* count("batchSize", options.batchSize, 100, 1)
    const concurrency = yield* count("concurrency", options.concurrency, 16, 1)
    const leaseMillis = yield* millis("claimLease", options.claimLease, 30_000)
    if (leaseMillis < 3) return yield* invalid("claimLease", `must be at least 3 ms, got ${leaseMillis} ms`)
    const commandMillis = options.commandTimeout === undefined
      ? Math.max(1, Math.min(10_000, Math.floor(leaseMillis / 2)))
      : yield* millis("commandTimeout", options.commandTimeout, 10_000)
    if (commandMillis >= leaseMillis) {
      return yield* invalid("commandTimeout", `must be shorter than claimLease (${leaseMillis} ms), got ${commandMillis} ms`)
    }
    const dispatch = options.dispatch ?? true
    if (typeof dispatch !== "boolean") return yield* invalid("dispatch", `must be a boolean, got ${describeValue(dispatch)}`)
    return { retry, pollMillis, maxIdleMillis, jitter, batchSize, concurrency, leaseMillis, commandMillis, dispatch }
  })

/**
 * The dispatcher's options as a layer; fails to build with
 * `InvalidConfiguration` when one is unusable.
 *
 * @example
 * ```ts
 * const Runtime = FSMRuntime.layer({ machines: [Order] }).pipe(
 *   Layer.provide(Outbox.layer({ pollInterval: "200 millis", retry: Schedule.exponential("100 millis").pipe(Schedule.intersect(Schedule.recurs(4))) })),
 *   Layer.provide(OrderHandlers),
 *   Layer.provide(SqliteEventStore.layer({ filename: "orders.db" }))
 * )
 * ```
 *
 * @since 0.1.0
 */
export const layer = (options: DispatcherOptions = {}): Layer.Layer<Dispatcher, InvalidConfiguration> =>
  Layer.effect(Dispatcher, resolveOptions(options))

// ---------------------------------------------------------------------------
// Dead letters
// ---------------------------------------------------------------------------

/**
 * The dead letters of a machine's commands, oldest failure first.
 *
 * @since 0.1.0
 */
export const deadLetters = (
  machine: Machine.Any | string
): Effect.Effect<ReadonlyArray<OutboxStore.DeadLetter>, PersistenceError, OutboxStore.OutboxStore> =>
  Effect.flatMap(OutboxStore.OutboxStore, (store) => store.deadLetters(typeof machine === "string" ? machine : machine.name))

/**
 * Moves a dead letter back to the pending commands, due now with no
 * attempts counted (after a fix); `false` when there is no such dead letter.
 *
 * @since 0.1.0
 */
export const redrive = (
  command: OutboxStore.CommandKey
): Effect.Effect<boolean, PersistenceError, OutboxStore.OutboxStore> =>
  Effect.flatMap(OutboxStore.OutboxStore, (store) => Effect.flatMap(nowMillis, (now) => store.redrive(command, now)))

/**
 * Deletes a dead letter for good; `false` when there is no such dead letter.
 *
 * @since 0.1.0
 */
export const discard = (
  command: OutboxStore.CommandKey
): Effect.Effect<boolean, PersistenceError, OutboxStore.OutboxStore> =>
  Effect.flatMap(OutboxStore.OutboxStore, (store) => store.discard(command))

// ---------------------------------------------------------------------------
// The dispatcher
// ---------------------------------------------------------------------------

/**
 * What running one command came to.
 *
 * - `Completed`: the handler returned no reply; the command is to be completed.
 * - `Delivered`: its reply, event or creation was committed, completing it.
 * - `Stale`: it was no longer pending (another node completed it first).
 * - `Rejected`: the target machine rejected the reply or event (or the
 *   target exists already, for a spawn): the command is completed, with a
 *   warning.
 * - `Failed`: a transient failure (the handler's, or the database's): retried.
 * - `Undeliverable`: trying again would decide the same (the command no longer
 *   decodes, its target machine is not registered, the reply is not an event
 *   of the machine): dead-lettered at once.
 * - `Busy`: another node holds the target instance's lease: tried again
 *   once the claim runs out, without counting an attempt.
 *
 * @since 0.1.0
 */
export type CommandResult =
  | { readonly _tag: "Completed" }
  | { readonly _tag: "Delivered"; readonly seqNr: number }
  | { readonly _tag: "Stale" }
  | { readonly _tag: "Rejected"; readonly reason: string }
  | { readonly _tag: "Failed"; readonly error: string }
  | { readonly _tag: "Undeliverable"; readonly error: string }
  | { readonly _tag: "Busy"; readonly reason: string }

/**
 * What a runtime offers its dispatcher.
 *
 * @since 0.1.0
 */
export interface Target {
  readonly nodeId: string
  /** The machines whose commands this runtime runs. */
  readonly machines: ReadonlyArray<string>
  /** Runs one claimed command (its handler and reply, or its delivery). */
  readonly run: (command: OutboxStore.CommandRecord, context: CommandContext) => Effect.Effect<CommandResult>
  /**
   * Called with a batch of claimed commands before they run: loads the
   * instances their replies and events go to together (one batch read
   * rather than one recovery per command). A shortcut only: it never
   * fails, and a dispatcher may skip it.
   */
  readonly prepare?: ((commands: ReadonlyArray<OutboxStore.CommandRecord>) => Effect.Effect<void>) | undefined
}

/**
 * A running dispatcher.
 *
 * @since 0.1.0
 */
export interface Running {
  /** This node committed a command: poll now rather than at the next interval. */
  readonly committed: () => void
}

/**
 * The delay before the next attempt after `attempts` failures, or `None`
 * when the schedule is done: the schedule stepped once per failure, its
 * clock advanced by its own delays from `createdAt`.
 */
const retryDelay = (
  schedule: Schedule.Schedule<unknown, string>,
  attempts: number,
  createdAt: number,
  error: string
): Effect.Effect<Option.Option<number>> =>
  Effect.gen(function*() {
    let state = schedule.initial
    let now = createdAt
    let delay = 0
    for (let i = 0; i < attempts; i++) {
      const [next, , decision] = yield* schedule.step(now, error, state)
      if (ScheduleDecision.isDone(decision)) return Option.none()
      state = next
      delay = Math.max(0, Intervals.start(decision.intervals) - now)
      now += delay
    }
    return Option.some(Math.ceil(delay))
  })

/**
 * What a handler's failure says, for logs and the stored last error: the
 * error's tag and message (or its fields), without a stack trace; a defect
 * in full.
 */
const failureText = (cause: Cause.Cause<unknown>): string => {
  const failure = Cause.failureOption(cause)
  if (failure._tag === "None") return Cause.pretty(cause)
  const error = failure.value
  if (typeof error === "string") return error
  if (typeof error === "object" && error !== null) {
    const tag = (error as { readonly _tag?: unknown })._tag
    const name = typeof tag === "string" ? tag : error instanceof Error ? error.name : undefined
    const message = error instanceof Error ? error.message : undefined
    if (name !== undefined && message !== undefined && message.length > 0) return `${name}: ${message}`
    if (name !== undefined) {
      const { _tag: _, ...fields } = error as Record<string, unknown>
      return Object.keys(fields).length === 0 ? name : `${name} ${describeValue(fields)}`
    }
  }
  return describeValue(error)
}

/** A command running on this node: when its claim was last extended (this node's clock), and whether it was found lost. */
interface RunningCommand {
  readonly command: OutboxStore.CommandRecord
  extendedAt: number
  lost: boolean
}

const describeCommand = (command: OutboxStore.CommandRecord) =>
  `${command.machine}/${command.instanceId} command ${command.index} (${command.tag}) of seqNr ${command.seqNr}`

/**
 * Starts the dispatcher of one runtime, in its scope.
 *
 * @since 0.1.0
 */
export const start = (
  store: OutboxStore.OutboxStore["Type"],
  target: Target,
  config: DispatcherConfig
): Effect.Effect<Running, never, Scope.Scope> =>
  Effect.gen(function*() {
    if (!config.dispatch || target.machines.length === 0) return { committed: () => {} }
    const { leaseMillis } = config

    const deadLetter = (command: OutboxStore.CommandRecord, error: string, why: string) =>
      Effect.flatMap(nowMillis, (now) =>
        store.deadLetter(command, { error: storableText(error), now, nodeId: target.nodeId }).pipe(
          Effect.zipRight(Metric.increment(Metrics.outboxDeadLettered)),
          Effect.zipRight(Effect.logError(`${describeCommand(command)}: dead-lettered ${why}: ${error}`))
        ))

    const retry = (command: OutboxStore.CommandRecord, error: string) =>
      Effect.gen(function*() {
        const attempts = command.attempts + 1
        yield* Metric.increment(Metrics.outboxFailed)
        const delay = yield* retryDelay(config.retry, attempts, command.createdAt, error)
        if (Option.isNone(delay)) return yield* deadLetter(command, error, `after ${attempts} attempts`)
        const now = yield* nowMillis
        yield* store.retryLater(command, { dueAt: now + delay.value, error: storableText(error), nodeId: target.nodeId })
        yield* Metric.increment(Metrics.outboxRetries)
        yield* Effect.logWarning(`${describeCommand(command)}: attempt ${attempts} failed, retrying in ${delay.value} ms: ${error}`)
      })

    /**
     * The commands running on this node, each with the time (this node's
     * clock) its claim's end was last computed from. One fiber of the
     * dispatcher (`refresher`) looks at them every sixth of the lease and
     * extends each claim older than a third of it, so a claim is extended at
     * most half a lease after the last time: no other node takes a command
     * over from a slow handler. One fiber for all of them, instead of a
     * sleeping fiber raced against every command; and only while some run,
     * so an idle dispatcher sets no timer (a test's `TestClock.adjust` of a
     * day would otherwise wake it thousands of times).
     */
    const running = new Set<RunningCommand>()
    const refreshAfterMillis = Math.floor(leaseMillis / 3)
    /** How often the refresher looks; also how old a claim may be when its command starts (see `settle`). */
    const sixthOfLeaseMillis = Math.floor(leaseMillis / 6)
    const refresh = (entry: RunningCommand, now: number) =>
      store.extendClaim(entry.command, { nodeId: target.nodeId, claimUntil: now + leaseMillis }).pipe(
        Effect.flatMap((held) => {
          if (held) {
            entry.extendedAt = now
            return Effect.void
          }
          // Another node has it now: nothing more to extend.
          entry.lost = true
          return Effect.logWarning(`${describeCommand(entry.command)}: its claim was lost while it ran`)
        }),
        Effect.catchAllCause((cause) => Effect.logWarning(`${describeCommand(entry.command)}: refreshing its claim failed`, cause))
      )
    const scope = yield* Effect.scope
    let refreshing = false
    const refresher: Effect.Effect<void> = Effect.sleep(Math.max(1, sixthOfLeaseMillis)).pipe(
      Effect.zipRight(nowMillis),
      Effect.flatMap((now) =>
        Effect.forEach(
          [...running].filter((entry) => !entry.lost && now - entry.extendedAt >= refreshAfterMillis),
          (entry) => refresh(entry, now),
          { concurrency: "unbounded", discard: true }
        )
      ),
      Effect.repeat({
        while: () => {
          if (running.size > 0) return true
          refreshing = false
          return false
        }
      }),
      Effect.annotateLogs({ component: "OutboxDispatcher", node: target.nodeId })
    )
    /** `entry` runs from now on; the refresher starts if it was not running. */
    const track = (entry: RunningCommand) =>
      Effect.suspend(() => {
        running.add(entry)
        if (refreshing) return Effect.void
        refreshing = true
        return Effect.asVoid(Effect.forkIn(refresher, scope))
      })

    /** `claimedAt`: the time (this node's clock) the claim's end was computed from. */
    const settle = (command: OutboxStore.CommandRecord, claimedAt: number) =>
      Effect.gen(function*() {
        // A command starts as soon as it is claimed (a poll claims only as
        // many as there are free places), after the batch read of its
        // instances. A claim taken at most a sixth of the lease ago keeps
        // at least half of it until the first refresh below, so it is not
        // renewed: that would be one more statement per command. An older
        // one (a slow batch read) is renewed here, or the command is another
        // node's by now.
        const now = yield* nowMillis
        const entry: RunningCommand = { command, extendedAt: claimedAt, lost: false }
        if (now - claimedAt > sixthOfLeaseMillis) {
          const held = yield* store.extendClaim(command, { nodeId: target.nodeId, claimUntil: now + leaseMillis })
          if (!held) return yield* Effect.logDebug(`${describeCommand(command)}: its claim passed to another node before it started`)
          entry.extendedAt = now
        }
        const startedAt = yield* Clock.currentTimeMillis
        if (command.attempts === 0) yield* Metric.update(Metrics.outboxLatency, Math.max(0, startedAt - command.createdAt))
        const context: CommandContext = {
          machine: command.machine,
          instanceId: command.instanceId,
          seqNr: command.seqNr,
          index: command.index,
          idempotencyKey: OutboxStore.idempotencyKey(command),
          attempt: command.attempts + 1,
          correlationId: command.correlationId,
          fencingToken: command.fenceToken,
          createdAt: command.createdAt
        }
        yield* track(entry)
        const result = yield* target.run(command, context).pipe(
          Effect.catchAllCause((cause): Effect.Effect<CommandResult> =>
            Cause.isInterruptedOnly(cause)
              ? Effect.failCause(cause as Cause.Cause<never>)
              : Effect.succeed({ _tag: "Failed", error: failureText(cause) })
          ),
          Effect.ensuring(Effect.sync(() => running.delete(entry)))
        )
        switch (result._tag) {
          case "Completed":
            yield* store.complete(command, { claimedBy: target.nodeId })
            return yield* Metric.increment(Metrics.outboxDispatched)
          case "Delivered":
            return yield* Metric.increment(Metrics.outboxDispatched)
          case "Stale":
            return yield* Effect.logDebug(`${describeCommand(command)}: completed by another node first`)
          case "Rejected":
            yield* store.complete(command, { claimedBy: target.nodeId })
            yield* Metric.increment(Metrics.outboxRejected)
            return yield* Effect.logWarning(`${describeCommand(command)}: rejected by its target, completed: ${result.reason}`)
          case "Failed":
            return yield* retry(command, result.error)
          case "Undeliverable":
            return yield* deadLetter(command, result.error, "as undeliverable")
          case "Busy":
            // Left claimed: another poll takes it again once the claim runs out.
            return yield* Effect.logDebug(`${describeCommand(command)}: target busy on another node (${result.reason}), later`)
        }
      })

    const poller = yield* makePoller({
      config: {
        pollMillis: config.pollMillis,
        maxIdleMillis: config.maxIdleMillis,
        jitter: config.jitter,
        batchSize: config.batchSize,
        concurrency: config.concurrency,
        settleMillis: config.commandMillis
      },
      claim: (now, limit) =>
        store.claimDue({ machines: target.machines, now, limit, nodeId: target.nodeId, claimUntil: now + leaseMillis }),
      settle,
      prepare: target.prepare,
      nextDueAt: store.nextDueAt(target.machines),
      describe: describeCommand,
      span: { name: "Outbox.poll", attributes: { node: target.nodeId } }
    })
    yield* poller.loop.pipe(
      Effect.annotateLogs({ component: "OutboxDispatcher", node: target.nodeId }),
      Effect.forkScoped
    )
    return { committed: poller.wakeNow }
  })
