/**
 * Diagrams of machines and of instance histories, as plain text.
 *
 * - `mermaid(machine)`: a Mermaid `stateDiagram-v2` of the transition table.
 * - `dot(machine)`: the same graph for GraphViz.
 * - `trace(history)`: a Mermaid `sequenceDiagram` of the path one instance
 *   actually took, from `FSMRuntime.history`.
 *
 * The machine diagrams read the compiled table, the same one `Machine.step`
 * decides from, so they cannot drift from the behaviour. All three are pure,
 * never throw, and are deterministic — states and events in schema order,
 * timeouts by name, no clock of their own — so their output can be
 * snapshot-tested and committed next to the code.
 *
 * How the machine diagrams draw things (Mermaid / GraphViz):
 *
 * - static initial state: `[*] --> Idle` / a point with an edge to the state.
 * - transition: one edge per (state, event, alternative), labelled with the
 *   event tag.
 * - guarded alternative: `Pay [guard]` when it is the only one; by position,
 *   `Add [guard 1]`, with `[else]` for the unguarded fallback, when there are
 *   several; or the names given in `guardNames`.
 * - `Machine.stay`: a self-loop `Note (stay)`; `reenter: true`: a self-loop
 *   `Reset (re-enter)`. A plain transition to the same state (a data update)
 *   is an unmarked self-loop.
 * - `{ to, stop: true }`: `Deliver (stop)` into the target. When every
 *   transition into the target stops, the target is final: `Delivered -->
 *   [*]` / a `doublecircle`.
 * - `Machine.stop`: `Shipped --> [*] : Close (stop)` / an edge to a bull's-eye.
 * - timeout: `⏱ payment 5m (PaymentTimeout)` / the same label without `⏱`,
 *   `style=dashed`.
 *
 * A timeout fires its event through the ordinary table, so it is not an extra
 * edge: the edge of its event in that state carries the timeout's name and
 * duration instead of the bare event tag. Mermaid's state diagrams have no
 * dashed or styled edges, hence the `⏱` prefix there. A timeout whose event
 * its state does not handle (a definition problem) is drawn as a note.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Option from "effect/Option"
import type * as FSMRuntime from "./FSMRuntime.js"
import * as Machine from "./Machine.js"

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/**
 * Names for guards, which are anonymous functions: state tag, then event
 * tag, then either one name (for the first alternative) or a list of names by
 * alternative position (`undefined` keeps the default label). Misspelt
 * tags do not compile.
 *
 * @example
 * ```ts
 * const guardNames: Visualize.GuardNames<"Even" | "Odd", "Add" | "Reset"> = {
 *   Even: { Add: ["sum is even", "odd sum"] } // "Add [sum is even]", "Add [odd sum]"
 * }
 * ```
 *
 * @since 0.1.0
 */
export type GuardNames<StateTag extends string = string, EventTag extends string = string> = {
  readonly [K in StateTag]?: {
    readonly [EK in EventTag]?: string | ReadonlyArray<string | undefined>
  }
}

/**
 * Options of `mermaid` and `dot`.
 *
 * @example
 * ```ts
 * Visualize.mermaid(Order, {
 *   guardNames: { Pending: { Pay: "amount > 0" } },
 *   direction: "LR",
 *   title: "Order workflow",
 *   timeoutMarker: "timeout"
 * })
 * ```
 *
 * @since 0.1.0
 */
export interface DiagramOptions<StateTag extends string = string, EventTag extends string = string> {
  /** Labels for guarded alternatives instead of `guard`, `guard 1`, ...; an unguarded fallback is `else`. */
  readonly guardNames?: GuardNames<StateTag, EventTag>
  /** Layout direction: top to bottom (default) or left to right. */
  readonly direction?: "TB" | "LR"
  /** A title above the diagram; defaults to the machine's name, `false` leaves it out. */
  readonly title?: string | false
  /**
   * Mermaid only: what marks a timeout's edge label, `"⏱"` by default. Set a
   * plain word such as `"timeout"` where the renderer's fonts lack the
   * glyph. GraphViz draws timeouts dashed instead.
   */
  readonly timeoutMarker?: string
}

// ---------------------------------------------------------------------------
// The graph both machine diagrams draw
// ---------------------------------------------------------------------------

interface Timer {
  readonly name: string
  readonly after: string
}

interface Edge {
  readonly from: string
  /** A state tag, or `undefined` for the end of the instance (`Machine.stop`). */
  readonly to: string | undefined
  readonly event: string
  readonly guard: string | undefined
  readonly stay: boolean
  readonly reenter: boolean
  readonly stop: boolean
  /** The timeouts of `from` that send `event`, by name. */
  readonly timers: ReadonlyArray<Timer>
}

interface UnhandledTimeout {
  readonly state: string
  readonly timer: Timer
  readonly event: string
}

interface Graph {
  readonly name: string
  readonly states: ReadonlyArray<string>
  readonly initial: string | undefined
  readonly edges: ReadonlyArray<Edge>
  /** States that only stopping transitions enter: reaching one ends the instance. */
  readonly finals: ReadonlyArray<string>
  readonly unhandled: ReadonlyArray<UnhandledTimeout>
}

const byCodeUnits = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0)

/** Keys in the order of `order`, then any others sorted, so the result never depends on insertion order. */
const ordered = (keys: Iterable<string>, order: ReadonlyArray<string>): ReadonlyArray<string> => {
  const present = new Set(keys)
  const known = order.filter((key) => present.has(key))
  const rest = [...present].filter((key) => !order.includes(key)).sort(byCodeUnits)
  return [...known, ...rest]
}

const guardLabel = (
  alternatives: ReadonlyArray<Machine.CompiledAlternative>,
  index: number,
  names: string | ReadonlyArray<string | undefined> | undefined
): string | undefined => {
  const alternative = alternatives[index]!
  const guarded = alternative.guard !== undefined
  const auto = guarded ? (alternatives.length === 1 ? "guard" : `guard ${index + 1}`) : index > 0 ? "else" : undefined
  if (auto === undefined) return undefined
  const named = typeof names === "string" ? (index === 0 ? names : undefined) : Array.isArray(names) ? names[index] : undefined
  return typeof named === "string" && named.length > 0 ? named : auto
}

/**
 * A duration, compactly: `5m`, `24h`, `1h30m`, `10s`, `250ms`, `14d` (days
 * from two days on); `f(state)` for one computed from the state, `∞` for an
 * infinite one.
 *
 * @example
 * ```ts
 * Visualize.formatDuration("90 minutes") // "1h30m"
 * Visualize.formatDuration((s: { tier: string }) => s.tier === "gold" ? "1 day" : "1 hour") // "f(state)"
 * ```
 *
 * @since 0.1.0
 */
export const formatDuration = (after: unknown): string => {
  if (typeof after === "function") return "f(state)"
  const decoded = Duration.decodeUnknown(after)
  if (Option.isNone(decoded)) return "invalid duration"
  const nanos = Duration.toNanos(decoded.value)
  if (Option.isNone(nanos)) return "∞"
  let rest = nanos.value
  if (rest === 0n) return "0s"
  const units: ReadonlyArray<readonly [string, bigint]> = [
    ["d", 86_400_000_000_000n],
    ["h", 3_600_000_000_000n],
    ["m", 60_000_000_000n],
    ["s", 1_000_000_000n],
    ["ms", 1_000_000n],
    ["µs", 1_000n],
    ["ns", 1n]
  ]
  let out = ""
  // Days only from two days on: "24h" and "36h" read better than "1d" and "1d12h".
  for (const [unit, size] of rest < 2n * units[0]![1] ? units.slice(1) : units) {
    const count = rest / size
    if (count > 0n) {
      out += `${count}${unit}`
      rest -= count * size
    }
  }
  return out
}

const graphOf = (machine: Machine.Any, options: DiagramOptions | undefined): Graph => {
  const states = ordered([...machine.stateTags, ...machine.table.keys()], machine.stateTags)
  const edges: Array<Edge> = []
  const enteredByStop = new Set<string>()
  const enteredOtherwise = new Set<string>()
  const unhandled: Array<UnhandledTimeout> = []
  for (const state of states) {
    const row = machine.table.get(state) ?? new Map<string, ReadonlyArray<Machine.CompiledAlternative>>()
    const timersByEvent = new Map<string, Array<Timer>>()
    const timeouts = [...(machine.timeouts.get(state) ?? [])].sort((a, b) => byCodeUnits(a.name, b.name))
    for (const timeout of timeouts) {
      const event = String((timeout.event as Partial<Machine.Tagged> | undefined)?._tag)
      const timer: Timer = { name: timeout.name, after: formatDuration(timeout.after) }
      if (row.has(event)) {
        const list = timersByEvent.get(event) ?? []
        list.push(timer)
        timersByEvent.set(event, list)
      } else {
        unhandled.push({ state, timer, event })
      }
    }
    const names = options?.guardNames?.[state]
    for (const event of ordered(row.keys(), machine.eventTags)) {
      const alternatives = row.get(event) ?? []
      const timers = timersByEvent.get(event) ?? []
      alternatives.forEach((alternative, index) => {
        const guard = guardLabel(alternatives, index, names?.[event])
        const common = { from: state, event, guard, timers, reenter: false }
        if (alternative.op === "stay") {
          edges.push({ ...common, to: state, stay: true, stop: false })
        } else if (alternative.op === "stop") {
          edges.push({ ...common, to: undefined, stay: false, stop: true })
        } else {
          const to = alternative.to ?? state
          if (to !== state) (alternative.stop ? enteredByStop : enteredOtherwise).add(to)
          edges.push({ ...common, to, stay: false, stop: alternative.stop, reenter: alternative.reenter && to === state })
        }
      })
    }
  }
  const initial = Option.isSome(machine.initial) ? (machine.initial.value as Machine.Tagged)._tag : undefined
  return {
    name: machine.name,
    states,
    initial: typeof initial === "string" ? initial : undefined,
    edges,
    finals: states.filter((state) => enteredByStop.has(state) && !enteredOtherwise.has(state)),
    unhandled
  }
}

const edgeLabel = (edge: Edge, timerPrefix: string): string => {
  const parts: Array<string> = []
  if (edge.timers.length > 0) {
    parts.push(`${timerPrefix}${edge.timers.map((t) => `${t.name} ${t.after}`).join(", ")} (${edge.event})`)
  } else {
    parts.push(edge.event)
  }
  if (edge.guard !== undefined) parts.push(`[${edge.guard}]`)
  if (edge.stay) parts.push("(stay)")
  if (edge.reenter) parts.push("(re-enter)")
  if (edge.stop) parts.push("(stop)")
  return parts.join(" ")
}

const unhandledLabel = (u: UnhandledTimeout, timerPrefix: string): string =>
  `${timerPrefix}${u.timer.name} ${u.timer.after} sends ${u.event}, which ${u.state} does not handle`

// ---------------------------------------------------------------------------
// Mermaid
// ---------------------------------------------------------------------------

const mermaidKeywords = new Set([
  "as",
  "bt",
  "choice",
  "class",
  "classdef",
  "click",
  "default",
  "direction",
  "end",
  "fork",
  "hide",
  "join",
  "left",
  "lr",
  "note",
  "of",
  "over",
  "right",
  "rl",
  "root_end",
  "root_start",
  "state",
  "statediagram",
  "style",
  "tb",
  "td"
])

const plainMermaidId = (tag: string): boolean => /^[A-Za-z][A-Za-z0-9_]*$/.test(tag) && !mermaidKeywords.has(tag.toLowerCase())

/** Unique Mermaid ids per state tag: the tag itself when Mermaid can take it, a sanitized alias otherwise. */
const mermaidIds = (states: ReadonlyArray<string>): ReadonlyMap<string, string> => {
  const ids = new Map<string, string>()
  const taken = new Set<string>()
  for (const state of states) {
    if (plainMermaidId(state)) {
      ids.set(state, state)
      taken.add(state)
    }
  }
  for (const state of states) {
    if (ids.has(state)) continue
    const sanitized = state.replace(/[^A-Za-z0-9_]/g, "_")
    const base = plainMermaidId(sanitized) ? sanitized : `s_${sanitized}`
    let id = base
    for (let n = 2; taken.has(id) || mermaidKeywords.has(id.toLowerCase()); n++) id = `${base}_${n}`
    ids.set(state, id)
    taken.add(id)
  }
  return ids
}

const mermaidSafeAscii = /[A-Za-z0-9 _\-.,()[\]/+*=!?'@$&^~|]/
const mermaidSafeAsciiWithColon = /[A-Za-z0-9 _\-.,()[\]/+*=!?'@$&^~|:]/

/**
 * Text Mermaid shows as written: characters that its grammar could read
 * (`;`, `#`, `"`, `:`, `<`, `%`, `{`, line breaks, ...) become `#code;`
 * entities, which Mermaid renders as the character itself.
 */
const mermaidText = (text: string, keepColon = false): string => {
  const safe = keepColon ? mermaidSafeAsciiWithColon : mermaidSafeAscii
  let out = ""
  for (const char of text) {
    const code = char.codePointAt(0)!
    const keep = code < 128 ? safe.test(char) : !/[\p{C}\p{Z}]/u.test(char)
    out += keep ? char : `#${code};`
  }
  return out
}

/**
 * A title in Mermaid front matter: plain when YAML reads it as written, else
 * a JSON string (a valid YAML scalar). Not entity-escaped: Mermaid shows a
 * title's text as it is.
 */
const frontMatter = (title: string): ReadonlyArray<string> => [
  "---",
  `title: ${/^[A-Za-z0-9][A-Za-z0-9 _.\-]*$/.test(title) && !title.endsWith(" ") ? title : JSON.stringify(title)}`,
  "---"
]

/**
 * A Mermaid `stateDiagram-v2` of a machine: every state, the static initial
 * state, one edge per (state, event, alternative), timeouts as `⏱` edges
 * with their durations, stops to `[*]`. See the module documentation for
 * how each kind of transition is drawn.
 *
 * @example
 * ```ts
 * import { Visualize } from "effect-fsm"
 *
 * const text = Visualize.mermaid(Order, { guardNames: { Pending: { Pay: "amount > 0" } } })
 * // stateDiagram-v2
 * //   ...
 * //   Pending --> Paid : Pay [amount > 0]
 * //   Pending --> Cancelled : ⏱ payment 5m (PaymentTimeout)
 * ```
 *
 * @since 0.1.0
 */
export const mermaid = <S extends Machine.Tagged, E extends Machine.Tagged, R>(
  machine: Machine.Machine<S, E, R>,
  options?: DiagramOptions<S["_tag"], E["_tag"]>
): string => {
  const graph = graphOf(machine, options)
  const ids = mermaidIds(graph.states)
  const id = (state: string) => ids.get(state) ?? state
  const title = options?.title === undefined ? graph.name : options.title
  const marker = options?.timeoutMarker === undefined ? "⏱ " : options.timeoutMarker.length > 0 ? `${options.timeoutMarker} ` : ""
  const lines: Array<string> = [...(title === false ? [] : frontMatter(title)), "stateDiagram-v2"]
  if (options?.direction === "LR") lines.push("  direction LR")
  for (const state of graph.states) {
    lines.push(id(state) === state ? `  ${state}` : `  state "${mermaidText(state)}" as ${id(state)}`)
  }
  if (graph.initial !== undefined && ids.has(graph.initial)) lines.push(`  [*] --> ${id(graph.initial)}`)
  for (const edge of graph.edges) {
    const to = edge.to === undefined ? "[*]" : id(edge.to)
    lines.push(`  ${id(edge.from)} --> ${to} : ${mermaidText(edgeLabel(edge, marker))}`)
  }
  for (const state of graph.finals) lines.push(`  ${id(state)} --> [*]`)
  for (const u of graph.unhandled) {
    lines.push(`  note right of ${id(u.state)} : ${mermaidText(unhandledLabel(u, marker))}`)
  }
  return lines.join("\n") + "\n"
}

// ---------------------------------------------------------------------------
// GraphViz
// ---------------------------------------------------------------------------

/** A DOT double-quoted string: backslashes (which start DOT escapes such as `\N`), quotes and line breaks escaped. */
const dotString = (text: string): string =>
  `"${text.replace(/\\/g, "\\\\").replace(/"/g, "\\\"").replace(/\r\n|\r|\n/g, "\\n")}"`

/** A node id for a pseudo node that no state can collide with. */
const freshDotId = (base: string, taken: ReadonlySet<string>): string => {
  let id = base
  for (let n = 2; taken.has(id); n++) id = `${base}_${n}`
  return id
}

/**
 * The same graph as `mermaid`, for GraphViz: a `digraph` with states as
 * circles, states an instance can stop in as `doublecircle`, a point for the
 * start, a bull's-eye for `Machine.stop`, timeouts as `style=dashed` edges
 * labelled with name, duration and event. Every id and label is quoted.
 *
 * @example
 * ```ts
 * import { Visualize } from "effect-fsm"
 * import * as fs from "node:fs"
 *
 * fs.writeFileSync("order.dot", Visualize.dot(Order, { direction: "LR" }))
 * // dot -Tsvg order.dot > order.svg
 * ```
 *
 * @since 0.1.0
 */
export const dot = <S extends Machine.Tagged, E extends Machine.Tagged, R>(
  machine: Machine.Machine<S, E, R>,
  options?: DiagramOptions<S["_tag"], E["_tag"]>
): string => {
  const graph = graphOf(machine, options)
  const taken = new Set(graph.states)
  // GraphViz reads a name starting with `%` as an anonymous id of its own: such states get an alias and a label.
  const ids = new Map<string, string>()
  graph.states.forEach((state, index) => {
    const alias = state.startsWith("%") ? freshDotId(`__state_${index + 1}`, taken) : state
    ids.set(state, alias)
    taken.add(alias)
  })
  const id = (state: string) => ids.get(state) ?? state
  const start = freshDotId("__start", taken)
  taken.add(start)
  const end = freshDotId("__end", taken)
  taken.add(end)
  const title = options?.title === undefined ? graph.name : options.title
  const finals = new Set(graph.finals)
  const q = dotString
  const lines: Array<string> = [
    `digraph ${q(graph.name)} {`,
    `  rankdir=${options?.direction ?? "TB"};`,
    "  fontname=\"Helvetica\";",
    ...(title === false ? [] : [`  label=${q(title)};`, "  labelloc=t;"]),
    "  node [shape=circle, fontname=\"Helvetica\"];",
    "  edge [fontname=\"Helvetica\", fontsize=10];"
  ]
  for (const state of graph.states) {
    const attributes = [
      ...(id(state) === state ? [] : [`label=${q(state)}`]),
      ...(finals.has(state) ? ["shape=doublecircle"] : [])
    ]
    lines.push(`  ${q(id(state))}${attributes.length > 0 ? ` [${attributes.join(", ")}]` : ""};`)
  }
  if (graph.initial !== undefined && ids.has(graph.initial)) {
    lines.push(`  ${q(start)} [shape=point, width=0.15, label=""];`)
    lines.push(`  ${q(start)} -> ${q(id(graph.initial))};`)
  }
  if (graph.edges.some((edge) => edge.to === undefined)) {
    lines.push(`  ${q(end)} [shape=point, width=0.15, peripheries=2, label=""];`)
  }
  for (const edge of graph.edges) {
    const attributes = [`label=${q(edgeLabel(edge, ""))}`]
    if (edge.timers.length > 0) attributes.push("style=dashed")
    lines.push(`  ${q(id(edge.from))} -> ${q(edge.to === undefined ? end : id(edge.to))} [${attributes.join(", ")}];`)
  }
  graph.unhandled.forEach((u, index) => {
    const note = freshDotId(`__note_${index + 1}`, taken)
    taken.add(note)
    lines.push(`  ${q(note)} [shape=note, color=red, label=${q(unhandledLabel(u, ""))}];`)
    lines.push(`  ${q(id(u.state))} -> ${q(note)} [style=dashed, color=red, arrowhead=none];`)
  })
  lines.push("}")
  return lines.join("\n") + "\n"
}

// ---------------------------------------------------------------------------
// Trace of one instance
// ---------------------------------------------------------------------------

/**
 * Options of `trace`.
 *
 * @example
 * ```ts
 * Visualize.trace(history, { machine: Order, instanceId: "order-1", title: "order-1, unpaid" })
 * ```
 *
 * @since 0.1.0
 */
export interface TraceOptions<S extends Machine.Tagged = Machine.Tagged, E extends Machine.Tagged = Machine.Tagged> {
  /**
   * The instance's machine. With it, each event is replayed through
   * `Machine.step`, so transitions that stop the instance, stays and
   * re-entries are named; it also names the instance lane.
   */
  readonly machine?: Machine.Machine<S, E, unknown>
  /** Shown in the instance lane, after the machine's name. */
  readonly instanceId?: string
  /** A title above the diagram; none by default. */
  readonly title?: string
}

const sourceLanes: ReadonlyArray<readonly [string, string]> = [
  ["user", "User"],
  ["timeout", "⏱ Timeout"],
  ["outbox", "Outbox"]
]

/** Each source its own arrow: solid for users, dotted for timeouts, async for the outbox. */
const arrowOf = (source: string): string => (source === "timeout" ? "-->>" : source === "outbox" ? "-)" : "->>")

/** `Machine.step`, for drawing only: a guard or build that throws on old data just leaves the step unexplained. */
const replay = <S extends Machine.Tagged, E extends Machine.Tagged>(
  machine: Machine.Machine<S, E, unknown>,
  state: S,
  event: E
): Exclude<Machine.Decision<S>, { readonly _tag: "Failed" }> | undefined => {
  try {
    const decision = Machine.step(machine, state, event)
    return decision._tag === "Failed" ? undefined : decision
  } catch {
    // Odd history entries (a state that is not an object) are left unexplained too.
    return undefined
  }
}

const isoTime = (millis: number): string => {
  const date = new Date(millis)
  return Number.isNaN(date.getTime()) ? `invalid time ${String(millis)}` : date.toISOString()
}

/**
 * A Mermaid `sequenceDiagram` of the path one instance took, from its
 * `FSMRuntime.history`. Each record is a message from its source to the
 * instance — users, timeouts and the outbox each have their own lane and
 * arrow (solid, dotted, async) — labelled with its sequence number, event
 * tag (`create` / `stop` for lifecycle records), UTC timestamp and
 * correlation id, followed by a note with the resulting state.
 *
 * A sequence diagram rather than an annotated state diagram: a trace is
 * ordered in time, and an instance may pass through the same state many
 * times, which a state diagram would fold into one box.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Visualize } from "effect-fsm"
 *
 * const program = Effect.gen(function*() {
 *   const history = yield* runtime.history(Order, "order-1")
 *   return Visualize.trace(history, { machine: Order, instanceId: "order-1" })
 * })
 * // sequenceDiagram
 * //   participant user as User
 * //   participant instance as order order-1
 * //   user->>instance: 1 · create<br/>1970-01-01T00:00:00.000Z
 * //   Note right of instance: created in Pending
 * //   ...
 * ```
 *
 * @since 0.1.0
 */
export const trace = <S extends Machine.Tagged, E extends Machine.Tagged>(
  history: ReadonlyArray<FSMRuntime.HistoryEntry<S, E>>,
  options?: TraceOptions<NoInfer<S>, NoInfer<E>>
): string => {
  const machine = options?.machine
  const text = (s: string) => mermaidText(s, true)
  const lines: Array<string> = [...(options?.title === undefined ? [] : frontMatter(options.title)), "sequenceDiagram"]

  const used = new Set(history.map((entry) => String(entry.metadata?.source)))
  const lanes = new Map<string, string>()
  for (const [source, label] of sourceLanes) {
    if (used.has(source)) lanes.set(source, label)
  }
  ;[...used].filter((source) => !lanes.has(source)).sort(byCodeUnits).forEach((source) => lanes.set(source, source))
  const laneIds = new Map<string, string>()
  ;[...lanes.keys()].forEach((source, index) => {
    const known = sourceLanes.some(([s]) => s === source)
    laneIds.set(source, known ? source : `source_${index + 1}`)
  })
  for (const [source, label] of lanes) lines.push(`  participant ${laneIds.get(source)} as ${text(label)}`)
  const instanceLabel = [machine?.name, options?.instanceId].filter((s) => s !== undefined && s.length > 0).join(" ")
  lines.push(`  participant instance as ${text(instanceLabel.length > 0 ? instanceLabel : "instance")}`)

  let state: S | undefined
  let previousTag: string | undefined
  for (const entry of history) {
    const source = String(entry.metadata?.source)
    const what = entry._tag === "Created" ? "create" : entry._tag === "Stopped" ? "stop" : String(entry.event?._tag)
    const details = [isoTime(entry.metadata?.timestamp)]
    const correlationId = entry.metadata?.correlationId
    if (typeof correlationId === "string" && correlationId.length > 0) details.push(`correlation ${correlationId}`)
    lines.push(
      `  ${laneIds.get(source)}${arrowOf(source)}instance: ${text(`${entry.seqNr} · ${what}`)}<br/>${text(details.join(" · "))}`
    )

    let outcome: string
    if (entry._tag === "Created") {
      state = entry.state
      outcome = `created in ${entry.stateTag}`
    } else if (entry._tag === "Stopped") {
      outcome = `stopped in ${entry.stateTag}`
    } else {
      const decision = machine !== undefined && state !== undefined ? replay(machine, state, entry.event) : undefined
      if (decision === undefined || decision._tag === "Rejected") {
        state = undefined
        outcome = entry.stateTag === previousTag ? `stays in ${entry.stateTag}` : `→ ${entry.stateTag}`
      } else {
        state = decision.state
        outcome = decision._tag === "Stay"
          ? `stays in ${entry.stateTag}`
          : decision._tag === "Stop"
          ? `${decision.entered ? "→ " : "stays in "}${entry.stateTag}, stopped`
          : entry.stateTag === previousTag
          ? `re-enters ${entry.stateTag}`
          : `→ ${entry.stateTag}`
      }
    }
    previousTag = entry.stateTag
    lines.push(`  Note right of instance: ${text(outcome)}`)
  }
  return lines.join("\n") + "\n"
}
