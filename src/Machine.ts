/**
 * Typed machine definitions and the pure transition function.
 *
 * A machine is a table keyed by state tag, then event tag, over two
 * `effect/Schema` tagged unions. `Machine.make` compiles the table once;
 * `Machine.step` is the single place where transition semantics live: the
 * runtime, replay and visualization all call it.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import type * as Schema from "effect/Schema"
import { MachineDefinitionError } from "./Errors.js"
import { describeValue } from "./internal/describe.js"
import { tagsOfSchema } from "./internal/schemaTags.js"

// ---------------------------------------------------------------------------
// Type-level helpers
// ---------------------------------------------------------------------------

/**
 * Anything with a string `_tag`: the shape of every state and event.
 *
 * @since 0.1.0
 */
export interface Tagged {
  readonly _tag: string
}

/**
 * The member of a tagged union `X` whose tag is `K`.
 *
 * @since 0.1.0
 */
export type Of<X extends Tagged, K extends string> = Extract<X, { readonly _tag: K }>

/**
 * The data of a state: every field but `_tag`.
 *
 * @since 0.1.0
 */
export type DataOf<X> = Omit<X, "_tag">

type HasData<X> = [keyof DataOf<X>] extends [never] ? false : true

type DatalessTags<S extends Tagged> = {
  [K in S["_tag"]]: HasData<Of<S, K>> extends true ? never : K
}[S["_tag"]]

/**
 * A transition to a target state, typed against exactly one source state
 * (or group of states) and event (or group of events). `build` returns the
 * target's data and is required exactly when the target state has data.
 *
 * @since 0.1.0
 */
export type Goto<S extends Tagged, Src, Ev, C extends Tagged = never> = {
  [T in S["_tag"]]:
    & {
      /** The target state's tag. */
      readonly to: T
      /** The entry applies only when this holds. */
      readonly guard?: (state: Src, event: Ev) => boolean
      /**
       * For a transition back to the same state: `true` exits and re-enters
       * it (exit and entry actions run, its timeouts restart). By default a
       * transition to the same state only updates its data.
       */
      readonly reenter?: boolean
      /** Stop the instance in the target state: it accepts no more events. */
      readonly stop?: boolean
      /**
       * The commands this transition produces, built purely from the state
       * it leaves and the event. They are written to the outbox in the same
       * commit as the event and dispatched after it (see `Outbox`), numbered
       * before those of the target state's entry (`commands` of the
       * definition); the commands of one commit may run in any order.
       */
      readonly commands?: (state: Src, event: Ev) => ReadonlyArray<Produced<C>>
    }
    & (HasData<Of<S, T>> extends true ? { readonly build: (state: Src, event: Ev) => DataOf<Of<S, T>> }
      : { readonly build?: (state: Src, event: Ev) => DataOf<Of<S, T>> })
}[S["_tag"]]

/**
 * Keep the current state and its data unchanged (the event is still logged).
 *
 * @since 0.1.0
 */
export interface Stay {
  readonly _op: "stay"
}

/**
 * Stop the instance in its current state: it accepts no more events.
 *
 * @since 0.1.0
 */
export interface Stop {
  readonly _op: "stop"
}

/**
 * @since 0.1.0
 */
export const stay: Stay = { _op: "stay" }

/**
 * @since 0.1.0
 */
export const stop: Stop = { _op: "stop" }

/**
 * One alternative of a transition entry.
 *
 * @since 0.1.0
 */
export type Alternative<S extends Tagged, Src, Ev, C extends Tagged = never> =
  | DatalessTags<S>
  | Stay
  | Stop
  | Goto<S, Src, Ev, C>

/**
 * A transition entry: a data-less target tag, `Machine.stay`,
 * `Machine.stop`, a `{ to, guard?, build? }` object, or a list of those of
 * which the first whose guard holds wins.
 *
 * @since 0.1.0
 */
export type Entry<S extends Tagged, Src, Ev, C extends Tagged = never> =
  | Alternative<S, Src, Ev, C>
  | ReadonlyArray<Alternative<S, Src, Ev, C>>

/**
 * The transition table: state tag, then event tag, then entry.
 *
 * @since 0.1.0
 */
export type Transitions<S extends Tagged, E extends Tagged, C extends Tagged = never> = {
  readonly [K in S["_tag"]]?: {
    readonly [EK in E["_tag"]]?: Entry<S, Of<S, K>, Of<E, EK>, C>
  }
}

/**
 * A group entry: one entry for several source states and several events.
 * Built with the `group` function handed to the `groups` option.
 *
 * @since 0.1.0
 */
export interface Group {
  readonly states: ReadonlyArray<string>
  readonly events: ReadonlyArray<string>
  readonly entry: unknown
}

/**
 * Builds a typed group entry: `build` and `guard` receive the union of the
 * named states and the union of the named events.
 *
 * @since 0.1.0
 */
export type GroupBuilder<S extends Tagged, E extends Tagged, C extends Tagged = never> = <
  const Ss extends ReadonlyArray<S["_tag"]>,
  const Es extends ReadonlyArray<E["_tag"]>
>(
  states: Ss,
  events: Es,
  entry: Entry<S, Of<S, Ss[number]>, Of<E, Es[number]>, C>
) => Group

/**
 * A named timeout of a state: `after` the state is entered, `event` is sent
 * unless the instance left the state first.
 *
 * @since 0.1.0
 */
export interface Timeout<Src, E> {
  readonly after: Duration.DurationInput | ((state: Src) => Duration.DurationInput)
  readonly event: E
}

/**
 * Timeouts per state tag, each keyed by a name.
 *
 * @since 0.1.0
 */
export type Timeouts<S extends Tagged, E extends Tagged> = {
  readonly [K in S["_tag"]]?: { readonly [name: string]: Timeout<Of<S, K>, E> }
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/**
 * Where a built-in command sends: a machine, or (to break a cycle between
 * two machines that send to each other) an `address` naming it.
 *
 * @since 0.1.0
 */
export interface Address<S extends Tagged, E extends Tagged> {
  readonly name: string
  readonly stateSchema: Schema.Schema<S, unknown>
  readonly eventSchema: Schema.Schema<E, unknown>
}

/**
 * The built-in command "send `event` to instance `instanceId` of machine
 * `target`": delivered exactly once through the outbox (the target's commit
 * of the event also completes the command), with the correlation id of the
 * event that produced it. Built with `Machine.sendTo`.
 *
 * @since 0.1.0
 */
export interface SendTo {
  readonly _tag: "@sendTo"
  readonly target: Address<Tagged, Tagged>
  readonly instanceId: string
  readonly event: Tagged
}

/**
 * The built-in command "create instance `instanceId` of machine `target` in
 * `state`": created exactly once through the outbox; an instance that
 * exists already completes the command with a warning. Built with
 * `Machine.spawn`.
 *
 * @since 0.1.0
 */
export interface Spawn {
  readonly _tag: "@spawn"
  readonly target: Address<Tagged, Tagged>
  readonly instanceId: string
  readonly state: Tagged
}

/**
 * What a transition or a state's entry may produce: one of the machine's
 * own commands (handled by its `Outbox.handlers`), or a built-in one.
 *
 * @since 0.1.0
 */
export type Produced<C extends Tagged> = C | SendTo | Spawn

/**
 * The built-in command that sends `event` to instance `instanceId` of
 * `target` (a machine or an `address`), exactly once.
 *
 * @example
 * ```ts
 * transitions: {
 *   Placed: { Checkout: { to: "AwaitingPayment", commands: (s) => [Machine.sendTo(Payment, s.paymentId, { _tag: "Charge" })] } }
 * }
 * ```
 *
 * @since 0.1.0
 */
export const sendTo = <S extends Tagged, E extends Tagged>(
  target: Address<S, E>,
  instanceId: string,
  event: NoInfer<E>
): SendTo => ({ _tag: "@sendTo", target: target as unknown as Address<Tagged, Tagged>, instanceId, event })

/**
 * The built-in command that creates instance `instanceId` of `target` (a
 * machine or an `address`) in `state`, exactly once.
 *
 * @example
 * ```ts
 * commands: { AwaitingPayment: (s) => [Machine.spawn(Payment, `pay-${s.orderId}`, { _tag: "Charging", orderId: s.orderId, amount: s.amount })] }
 * ```
 *
 * @since 0.1.0
 */
export const spawn = <S extends Tagged, E extends Tagged>(
  target: Address<S, E>,
  instanceId: string,
  state: NoInfer<S>
): Spawn => ({ _tag: "@spawn", target: target as unknown as Address<Tagged, Tagged>, instanceId, state })

/**
 * A machine's address by name and schemas, for a built-in command to a
 * machine that cannot be imported where the command is built (two machines
 * that send to each other). Sending works only to a machine registered in
 * the runtime under that name, with these schemas.
 *
 * @example
 * ```ts
 * const OrderAddress = Machine.address({ name: "order", state: OrderState, event: OrderEvent })
 * ```
 *
 * @since 0.1.0
 */
export const address = <S extends Tagged, SI, E extends Tagged, EI>(options: {
  readonly name: string
  readonly state: Schema.Schema<S, SI, never>
  readonly event: Schema.Schema<E, EI, never>
}): Address<S, E> => ({
  name: options.name,
  stateSchema: options.state as Schema.Schema<S, unknown>,
  eventSchema: options.event as Schema.Schema<E, unknown>
})

/**
 * Commands produced on entering a state, per state tag: built purely from
 * the entered state and the event that entered it (`undefined` for the
 * initial state of `create`).
 *
 * @since 0.1.0
 */
export type EntryCommands<S extends Tagged, E extends Tagged, C extends Tagged> = {
  readonly [K in S["_tag"]]?: (state: Of<S, K>, event: E | undefined) => ReadonlyArray<Produced<C>>
}

/**
 * What an entry or exit action is told about the transition that ran it.
 *
 * @since 0.1.0
 */
export interface ActionContext<S, E> {
  readonly machine: string
  readonly instanceId: string
  /** Sequence number of the committed event. */
  readonly seqNr: number
  /** The event, or `undefined` for the entry of the initial state. */
  readonly event: E | undefined
  /** The state before the transition (entry) or after it (exit). */
  readonly other: S | undefined
}

// `any` in these constraints only lets each action pick its own error and
// requirements; the public machine type carries the inferred union instead.
type AnyAction<X, S, E> = (state: X, context: ActionContext<S, E>) => Effect.Effect<unknown, unknown, any>

/**
 * Actions per state tag, run after the commit that enters (or exits) it.
 *
 * @since 0.1.0
 */
export type Actions<S extends Tagged, E extends Tagged> = {
  readonly [K in S["_tag"]]?: AnyAction<Of<S, K>, S, E>
}

type ActionRequirements<A, Constraint> = Constraint extends A ? never : {
  [K in keyof A]-?: A[K] extends (...args: ReadonlyArray<never>) => Effect.Effect<unknown, unknown, infer R> ? R : never
}[keyof A]

/**
 * Everything `Machine.make` takes.
 *
 * @since 0.1.0
 */
export interface Definition<
  S extends Tagged,
  SI,
  E extends Tagged,
  EI,
  EN extends Actions<S, E>,
  EX extends Actions<S, E>,
  C extends Tagged = never
> {
  /** Unique within a runtime; part of every stored row. */
  readonly name: string
  /** Schema version stored with events and snapshots; snapshots of other versions are discarded. */
  readonly version: number
  readonly state: Schema.Schema<S, SI, never>
  readonly event: Schema.Schema<E, EI, never>
  /**
   * The commands the machine produces for its handlers (`Outbox.handlers`),
   * a tagged union like `state` and `event`. Built-in commands
   * (`Machine.sendTo`, `Machine.spawn`) need no schema.
   */
  readonly command?: Schema.Schema<C, any, never>
  /** A static initial state, used when `create` is given none. */
  readonly initial?: NoInfer<S>
  readonly transitions: NoInfer<Transitions<S, E, C>>
  /** Entries shared by several states and/or events; specific entries override them. */
  readonly groups?: (group: GroupBuilder<S, E, C>) => ReadonlyArray<Group>
  readonly timeouts?: NoInfer<Timeouts<S, E>>
  /** Commands produced on entering a state, written in the commit that enters it. */
  readonly commands?: NoInfer<EntryCommands<S, E, C>>
  readonly entry?: EN
  readonly exit?: EX
}

// ---------------------------------------------------------------------------
// The compiled machine
// ---------------------------------------------------------------------------

/** @internal */
export interface CompiledAlternative {
  readonly op: "goto" | "stay" | "stop"
  readonly to: string | undefined
  readonly guard: ((state: never, event: never) => boolean) | undefined
  readonly build: ((state: never, event: never) => object) | undefined
  readonly reenter: boolean
  readonly stop: boolean
  readonly commands: ((state: never, event: never) => ReadonlyArray<unknown>) | undefined
}

/** @internal */
export interface CompiledTimeout {
  readonly name: string
  readonly after: Duration.DurationInput | ((state: never) => Duration.DurationInput)
  readonly event: Tagged
}

/**
 * A compiled machine. `S`, `E` are the state and event types; `R` is what its
 * entry and exit actions require, which the runtime's layer must provide.
 *
 * @since 0.1.0
 */
export interface Machine<S extends Tagged, E extends Tagged, R = never, C extends Tagged = never> {
  readonly name: string
  readonly version: number
  readonly stateSchema: Schema.Schema<S, unknown>
  readonly eventSchema: Schema.Schema<E, unknown>
  /** The schema of the machine's own commands, when it has any. */
  readonly commandSchema: Option.Option<Schema.Schema<Tagged, unknown>>
  /** Tags of the machine's own commands, in schema order (each needs a handler). */
  readonly commandTags: ReadonlyArray<string>
  /** Whether any transition or state entry produces commands (built-in ones included). */
  readonly producesCommands: boolean
  readonly initial: Option.Option<S>
  /** All state tags, in schema order. */
  readonly stateTags: ReadonlyArray<string>
  /** All event tags, in schema order. */
  readonly eventTags: ReadonlyArray<string>
  /** @internal state tag -> event tag -> alternatives (specific entries merged over group entries) */
  readonly table: ReadonlyMap<string, ReadonlyMap<string, ReadonlyArray<CompiledAlternative>>>
  /** @internal */
  readonly timeouts: ReadonlyMap<string, ReadonlyArray<CompiledTimeout>>
  /** @internal */
  readonly entry: ReadonlyMap<string, AnyAction<never, S, E>>
  /** @internal */
  readonly exit: ReadonlyMap<string, AnyAction<never, S, E>>
  /** @internal state tag -> commands produced on entering it */
  readonly entryCommands: ReadonlyMap<string, (state: never, event: never) => ReadonlyArray<unknown>>
  /** Problems found while compiling; reported by `validate` and by runtime registration. */
  readonly problems: ReadonlyArray<string>
  /** Phantom: the requirements of the actions. */
  readonly Requirements?: (_: never) => R
  /**
   * Phantom: the machine's own commands. In a parameter position, so that a
   * machine with commands still fits where any machine of its states and
   * events is expected.
   */
  readonly Commands?: (_: C) => void
}

/**
 * Any machine, whatever its types.
 *
 * @since 0.1.0
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
// `never` for the commands: their phantom is contravariant, so every machine fits.
export type Any = Machine<any, any, any, never>

/**
 * @since 0.1.0
 */
export type StateOf<M> = M extends Machine<infer S extends Tagged, infer _E, infer _R, infer _C> ? S : never

/**
 * @since 0.1.0
 */
export type EventOf<M> = M extends Machine<infer _S, infer E extends Tagged, infer _R, infer _C> ? E : never

/**
 * @since 0.1.0
 */
export type Context<M> = M extends Machine<infer _S, infer _E, infer R, infer _C> ? R : never

/**
 * The machine's own commands (those its `Outbox.handlers` handle).
 *
 * @since 0.1.0
 */
export type CommandOf<M> = M extends Machine<infer _S, infer _E, infer _R, infer C extends Tagged> ? C : never

const isAlternativeList = (u: unknown): u is ReadonlyArray<unknown> => Array.isArray(u)

const compileAlternative = (raw: unknown): CompiledAlternative | string => {
  if (typeof raw === "string") {
    return { op: "goto", to: raw, guard: undefined, build: undefined, reenter: false, stop: false, commands: undefined }
  }
  if (typeof raw === "object" && raw !== null) {
    const r = raw as Record<string, unknown>
    if (r._op === "stay" || r._op === "stop") {
      return { op: r._op, to: undefined, guard: undefined, build: undefined, reenter: false, stop: false, commands: undefined }
    }
    if (typeof r.to === "string") {
      if (r.guard !== undefined && typeof r.guard !== "function") return "guard must be a function"
      if (r.build !== undefined && typeof r.build !== "function") return "build must be a function"
      if (r.commands !== undefined && typeof r.commands !== "function") return "commands must be a function"
      return {
        op: "goto",
        to: r.to,
        guard: r.guard as CompiledAlternative["guard"],
        build: r.build as CompiledAlternative["build"],
        reenter: r.reenter === true,
        stop: r.stop === true,
        commands: r.commands as CompiledAlternative["commands"]
      }
    }
  }
  return `not a transition entry: ${JSON.stringify(raw)}`
}

const compileEntry = (raw: unknown): { alternatives: Array<CompiledAlternative>; problems: Array<string> } => {
  const list = isAlternativeList(raw) ? raw : [raw]
  const alternatives: Array<CompiledAlternative> = []
  const problems: Array<string> = []
  if (list.length === 0) problems.push("an empty list of alternatives")
  for (const item of list) {
    const compiled = compileAlternative(item)
    if (typeof compiled === "string") problems.push(compiled)
    else alternatives.push(compiled)
  }
  return { alternatives, problems }
}

/**
 * Compiles a machine definition. Never throws: what the types cannot check
 * is collected in `problems` and reported as a `MachineDefinitionError` by
 * `Machine.validate` and when a runtime layer registers the machine (so a
 * layer with a broken machine fails to build).
 *
 * @example
 * ```ts
 * const Light = Machine.make({
 *   name: "light",
 *   version: 1,
 *   state: Schema.Union(Schema.TaggedStruct("Off", {}), Schema.TaggedStruct("On", {})),
 *   event: Schema.Union(Schema.TaggedStruct("Toggle", {})),
 *   initial: { _tag: "Off" },
 *   transitions: { Off: { Toggle: "On" }, On: { Toggle: "Off" } }
 * })
 * ```
 *
 * @since 0.1.0
 */
export const make = <
  S extends Tagged,
  SI,
  E extends Tagged,
  EI,
  // No defaults here: a default stops TypeScript from typing the actions'
  // parameters from the constraint. An omitted option infers the constraint
  // itself, which `ActionRequirements` maps to `never`.
  EN extends Actions<S, E>,
  EX extends Actions<S, E>,
  // Inferred from `command` only; a machine without one has no own commands.
  C extends Tagged = never
>(
  definition: Definition<S, SI, E, EI, EN, EX, C>
): Machine<S, E, ActionRequirements<EN, Actions<S, E>> | ActionRequirements<EX, Actions<S, E>>, C> => {
  const problems: Array<string> = []
  const stateTags = tagsOfSchema(definition.state)
  const eventTags = tagsOfSchema(definition.event)
  const commandTags = definition.command === undefined ? [] : tagsOfSchema(definition.command)
  if (definition.command !== undefined && commandTags.length === 0) {
    problems.push("the command schema must be a union of tagged structs")
  }
  for (const tag of commandTags) {
    if (tag.startsWith("@")) problems.push(`command tag "${tag}" must not start with "@" (reserved for built-in commands)`)
  }
  if (stateTags.length === 0) problems.push("the state schema must be a union of tagged structs")
  if (eventTags.length === 0) problems.push("the event schema must be a union of tagged structs")
  if (definition.name.length === 0) problems.push("the name must not be empty")
  if (!Number.isInteger(definition.version) || definition.version < 0) {
    problems.push(`version must be a non-negative integer, got ${definition.version}`)
  }
  for (const tag of eventTags) {
    if (tag.startsWith("@")) problems.push(`event tag "${tag}" must not start with "@" (reserved for lifecycle records)`)
  }
  const stateSet = new Set(stateTags)
  const eventSet = new Set(eventTags)

  const checkAlternatives = (where: string, alternatives: ReadonlyArray<CompiledAlternative>) => {
    alternatives.forEach((alt, i) => {
      if (alt.to !== undefined && !stateSet.has(alt.to)) {
        problems.push(`${where}: target "${alt.to}" is not a state of the state schema`)
      }
      if (alt.guard === undefined && i < alternatives.length - 1) {
        problems.push(`${where}: alternative ${i + 1} has no guard, so the alternatives after it can never be taken`)
      }
    })
  }

  // Specific entries.
  const specific = new Map<string, Map<string, ReadonlyArray<CompiledAlternative>>>()
  for (const [stateTag, row] of Object.entries(definition.transitions as Record<string, unknown>)) {
    if (!stateSet.has(stateTag)) {
      problems.push(`transitions: "${stateTag}" is not a state of the state schema`)
      continue
    }
    if (row === undefined) continue
    const compiledRow = new Map<string, ReadonlyArray<CompiledAlternative>>()
    for (const [eventTag, raw] of Object.entries(row as Record<string, unknown>)) {
      const where = `transitions.${stateTag}.${eventTag}`
      if (!eventSet.has(eventTag)) {
        problems.push(`${where}: "${eventTag}" is not an event of the event schema`)
        continue
      }
      if (raw === undefined) continue
      const { alternatives, problems: entryProblems } = compileEntry(raw)
      entryProblems.forEach((p) => problems.push(`${where}: ${p}`))
      checkAlternatives(where, alternatives)
      compiledRow.set(eventTag, alternatives)
    }
    specific.set(stateTag, compiledRow)
  }

  // Group entries: a (state, event) pair covered by two groups is a conflict.
  const grouped = new Map<string, Map<string, ReadonlyArray<CompiledAlternative>>>()
  const groupOf = new Map<string, number>()
  const groupBuilder: GroupBuilder<S, E, C> = (states, events, entry) => ({ states, events, entry })
  const groups = definition.groups ? definition.groups(groupBuilder) : []
  groups.forEach((group, index) => {
    const where = `groups[${index}]`
    if (group.states.length === 0) problems.push(`${where}: names no states`)
    if (group.events.length === 0) problems.push(`${where}: names no events`)
    const { alternatives, problems: entryProblems } = compileEntry(group.entry)
    entryProblems.forEach((p) => problems.push(`${where}: ${p}`))
    checkAlternatives(where, alternatives)
    for (const stateTag of group.states) {
      if (!stateSet.has(stateTag)) {
        problems.push(`${where}: "${stateTag}" is not a state of the state schema`)
        continue
      }
      for (const eventTag of group.events) {
        if (!eventSet.has(eventTag)) {
          problems.push(`${where}: "${eventTag}" is not an event of the event schema`)
          continue
        }
        const key = `${stateTag}\u0000${eventTag}`
        const previous = groupOf.get(key)
        if (previous !== undefined) {
          problems.push(
            `groups[${previous}] and ${where} both define (${stateTag}, ${eventTag}); give the pair a specific entry or split the groups`
          )
          continue
        }
        groupOf.set(key, index)
        let row = grouped.get(stateTag)
        if (row === undefined) grouped.set(stateTag, row = new Map())
        row.set(eventTag, alternatives)
      }
    }
  })

  // Merge: specific overrides group.
  const table = new Map<string, Map<string, ReadonlyArray<CompiledAlternative>>>()
  for (const stateTag of stateTags) {
    const row = new Map<string, ReadonlyArray<CompiledAlternative>>(grouped.get(stateTag) ?? [])
    for (const [eventTag, alternatives] of specific.get(stateTag) ?? []) row.set(eventTag, alternatives)
    table.set(stateTag, row)
  }

  // Timeouts: each timeout event must be handled in its state.
  const timeouts = new Map<string, ReadonlyArray<CompiledTimeout>>()
  for (const [stateTag, named] of Object.entries((definition.timeouts ?? {}) as Record<string, unknown>)) {
    if (!stateSet.has(stateTag)) {
      problems.push(`timeouts: "${stateTag}" is not a state of the state schema`)
      continue
    }
    const list: Array<CompiledTimeout> = []
    for (const [name, raw] of Object.entries((named ?? {}) as Record<string, Timeout<never, Tagged>>)) {
      const where = `timeouts.${stateTag}.${name}`
      if (typeof raw.after !== "function" && Option.isNone(Duration.decodeUnknown(raw.after))) {
        problems.push(`${where}: "after" is not a duration: ${JSON.stringify(raw.after)}`)
      }
      const eventTag = raw.event?._tag
      if (!table.get(stateTag)?.has(eventTag)) {
        problems.push(`${where}: state "${stateTag}" has no transition for its event "${eventTag}"`)
      }
      list.push({ name, after: raw.after, event: raw.event })
    }
    timeouts.set(stateTag, list)
  }

  const actions = (option: Actions<S, E> | undefined, kind: string) => {
    const map = new Map<string, AnyAction<never, S, E>>()
    for (const [stateTag, action] of Object.entries((option ?? {}) as Record<string, unknown>)) {
      if (!stateSet.has(stateTag)) problems.push(`${kind}: "${stateTag}" is not a state of the state schema`)
      else if (typeof action !== "function") problems.push(`${kind}.${stateTag}: not a function`)
      else map.set(stateTag, action as AnyAction<never, S, E>)
    }
    return map
  }
  const entry = actions(definition.entry, "entry")
  const exit = actions(definition.exit, "exit")

  const entryCommands = new Map<string, (state: never, event: never) => ReadonlyArray<unknown>>()
  for (const [stateTag, build] of Object.entries((definition.commands ?? {}) as Record<string, unknown>)) {
    if (build === undefined) continue
    if (!stateSet.has(stateTag)) problems.push(`commands: "${stateTag}" is not a state of the state schema`)
    else if (typeof build !== "function") problems.push(`commands.${stateTag}: not a function`)
    else entryCommands.set(stateTag, build as (state: never, event: never) => ReadonlyArray<unknown>)
  }
  let producesCommands = entryCommands.size > 0
  for (const row of table.values()) {
    for (const alternatives of row.values()) {
      if (alternatives.some((alt) => alt.commands !== undefined)) producesCommands = true
    }
  }

  if (definition.initial !== undefined && !stateSet.has(definition.initial._tag)) {
    problems.push(`initial: "${definition.initial._tag}" is not a state of the state schema`)
  }

  return {
    name: definition.name,
    version: definition.version,
    stateSchema: definition.state as Schema.Schema<S, unknown>,
    eventSchema: definition.event as Schema.Schema<E, unknown>,
    commandSchema: Option.fromNullable(definition.command as Schema.Schema<Tagged, unknown> | undefined),
    commandTags,
    producesCommands,
    initial: Option.fromNullable(definition.initial),
    stateTags,
    eventTags,
    table,
    timeouts,
    entry,
    exit,
    entryCommands,
    problems
  }
}

/**
 * Succeeds with the machine when its definition is consistent, or fails with
 * a `MachineDefinitionError` listing every problem found.
 *
 * @since 0.1.0
 */
export const validate = <S extends Tagged, E extends Tagged, R, C extends Tagged>(
  machine: Machine<S, E, R, C>
): Effect.Effect<Machine<S, E, R, C>, MachineDefinitionError> =>
  machine.problems.length === 0
    ? Effect.succeed(machine)
    : Effect.fail(new MachineDefinitionError({ machine: machine.name, reason: machine.problems.join("; ") }))

/**
 * States that no transition leads to and that are not the static initial
 * state. Worth a warning, not an error: an instance may be created in any
 * state.
 *
 * @since 0.1.0
 */
export const unreachableStates = (machine: Any): ReadonlyArray<string> => {
  const reached = new Set<string>()
  if (Option.isSome(machine.initial)) reached.add((machine.initial.value as Tagged)._tag)
  for (const [from, row] of machine.table) {
    for (const alternatives of row.values()) {
      for (const alt of alternatives) {
        if (alt.op === "goto" && alt.to !== undefined && alt.to !== from) reached.add(alt.to)
      }
    }
  }
  return machine.stateTags.filter((tag) => !reached.has(tag))
}

// ---------------------------------------------------------------------------
// The pure step
// ---------------------------------------------------------------------------

/**
 * The result of `Machine.step`.
 *
 * - `Goto`: the instance enters `state` (a different state, or the same one
 *   with `reenter`): exit and entry actions run, timeouts are rescheduled.
 * - `Stay`: the instance remains in the same state, possibly with new data;
 *   running timeouts keep their deadlines.
 * - `Stop`: the instance moves to `state` (or stays) and stops.
 * - `Rejected`: nothing happens; `reason` says why.
 * - `Failed`: a `guard` or `build` function of the machine threw `error`;
 *   nothing happens. `step` itself never throws.
 *
 * @since 0.1.0
 */
export type Decision<S> =
  | { readonly _tag: "Goto"; readonly state: S }
  | { readonly _tag: "Stay"; readonly state: S }
  | { readonly _tag: "Stop"; readonly state: S; readonly entered: boolean }
  | { readonly _tag: "Rejected"; readonly reason: "NoTransition" | "GuardRejected" | "Stopped" }
  | { readonly _tag: "Failed"; readonly stage: "guard" | "build"; readonly error: unknown }

// `_tag` is written last so that a `build` returning a whole state object
// cannot smuggle its own tag into the target.
const withTag = (tag: string, data: object): Tagged => {
  const next = { _tag: tag, ...data }
  next._tag = tag
  return next
}

const rejectedNoTransition = { _tag: "Rejected", reason: "NoTransition" } as const
const rejectedGuard = { _tag: "Rejected", reason: "GuardRejected" } as const
const rejectedStopped = { _tag: "Rejected", reason: "Stopped" } as const

/**
 * Options of `Machine.step`.
 *
 * @since 0.1.0
 */
export interface StepOptions {
  /** The instance is stopped: every event is rejected with reason `Stopped`. */
  readonly stopped?: boolean
}

/**
 * Decides what `event` does to an instance in `state`. Pure and synchronous:
 * the only place where transition semantics live. Never throws: a `guard`
 * or `build` that throws gives a `Failed` decision.
 *
 * @example
 * ```ts
 * const decision = Machine.step(Order, { _tag: "Pending", orderId: "o1" }, { _tag: "Pay", amount: 42 })
 * // { _tag: "Goto", state: { _tag: "Paid", orderId: "o1", amount: 42 } }
 * ```
 *
 * @since 0.1.0
 */
export const step = <S extends Tagged, E extends Tagged, R, C extends Tagged>(
  machine: Machine<S, E, R, C>,
  state: NoInfer<S>,
  event: NoInfer<E>,
  options?: StepOptions
): Decision<S> => stepTaking(machine, state, event, options?.stopped === true, ignoredTaken) as Decision<S>

/** @internal Where `stepTaking` reports the alternative it took. */
export interface Taken {
  alternative: CompiledAlternative | undefined
}

const ignoredTaken: Taken = { alternative: undefined }

/**
 * @internal `step`, also reporting in `taken` the alternative taken (for the
 * commands it produces), without allocating anything else.
 */
export const stepTaking = (
  machine: Any,
  state: Tagged,
  event: Tagged,
  stopped: boolean,
  taken: Taken
): Decision<Tagged> => {
  taken.alternative = undefined
  if (stopped) return rejectedStopped
  const alternatives = machine.table.get(state._tag)?.get(event._tag)
  if (alternatives === undefined) return rejectedNoTransition
  for (let i = 0; i < alternatives.length; i++) {
    const alt = alternatives[i]!
    if (alt.guard !== undefined) {
      let holds: boolean
      try {
        holds = (alt.guard as (s: Tagged, e: Tagged) => boolean)(state, event)
      } catch (error) {
        return { _tag: "Failed", stage: "guard", error }
      }
      if (!holds) continue
    }
    taken.alternative = alt
    if (alt.op === "stay") return { _tag: "Stay", state }
    if (alt.op === "stop") return { _tag: "Stop", state, entered: false }
    const to = alt.to!
    let next: Tagged
    if (alt.build === undefined) {
      next = { _tag: to }
    } else {
      let data: unknown
      try {
        data = (alt.build as (s: Tagged, e: Tagged) => unknown)(state, event)
      } catch (error) {
        return { _tag: "Failed", stage: "build", error }
      }
      if (typeof data !== "object" || data === null) {
        return { _tag: "Failed", stage: "build", error: new TypeError(`build returned ${String(data)}, not an object`) }
      }
      next = withTag(to, data)
    }
    const entered = to !== state._tag || alt.reenter
    if (alt.stop) return { _tag: "Stop", state: next, entered }
    return entered ? { _tag: "Goto", state: next } : { _tag: "Stay", state: next }
  }
  return rejectedGuard
}

// ---------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------

/**
 * A timeout armed by entering a state: at `dueAt` (epoch ms), `event` is sent
 * unless the instance left the state first.
 *
 * @since 0.1.0
 */
export interface Deadline<E> {
  readonly name: string
  readonly dueAt: number
  readonly event: E
}

/**
 * Why `deadlines` could not arm a state's timeouts: its `after` function
 * threw, or gave something that is not a duration.
 *
 * @since 0.1.0
 */
export interface DeadlineFailure {
  /** The timeout's name. */
  readonly timeout: string
  readonly reason: string
  readonly error: unknown
}

/**
 * The timeouts that entering `state` at `enteredAt` (epoch ms) arms, with
 * absolute deadlines. Pure: replay recomputes the same deadlines from the
 * timestamp stored with the entry event, so reloading never moves them.
 * An infinite duration arms nothing. Never throws: an `after` function
 * that throws or returns a non-duration is a `DeadlineFailure`.
 *
 * @example
 * ```ts
 * Machine.deadlines(Order, { _tag: "Pending", orderId: "o1" }, 0)
 * // Either.right([{ name: "payment", dueAt: 300000, event: { _tag: "PaymentTimeout" } }])
 * ```
 *
 * @since 0.1.0
 */
export const deadlines = <S extends Tagged, E extends Tagged, R, C extends Tagged>(
  machine: Machine<S, E, R, C>,
  state: NoInfer<S>,
  enteredAt: number
): Either.Either<ReadonlyArray<Deadline<E>>, DeadlineFailure> => {
  const timeouts = machine.timeouts.get(state._tag)
  if (timeouts === undefined || timeouts.length === 0) return noDeadlines
  const armed: Array<Deadline<E>> = []
  for (const timeout of timeouts) {
    let after: unknown
    try {
      after = typeof timeout.after === "function"
        ? (timeout.after as (s: S) => Duration.DurationInput)(state)
        : timeout.after
    } catch (error) {
      return Either.left({ timeout: timeout.name, reason: `its "after" function threw: ${describeValue(error)}`, error })
    }
    const duration = Duration.decodeUnknown(after)
    if (Option.isNone(duration)) {
      return Either.left({
        timeout: timeout.name,
        reason: `its "after" is not a duration: ${describeValue(after)}`,
        error: after
      })
    }
    const millis = Duration.toMillis(duration.value)
    // Deadlines are whole milliseconds; an infinite duration never fires.
    if (Number.isFinite(millis)) {
      armed.push({ name: timeout.name, dueAt: enteredAt + Math.max(0, Math.ceil(millis)), event: timeout.event as E })
    }
  }
  return Either.right(armed)
}

const noDeadlines = Either.right([])
