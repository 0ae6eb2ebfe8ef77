/**
 * Diagrams: snapshots of the fixtures and of a machine with every kind of
 * transition, determinism, escaping (checked by decoding the output back),
 * traces of real histories, and the `bin/diagram.ts` command.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Layer, Schema, TestClock } from "effect"
import type { FSMRuntime } from "effect-fsm"
import { EventStore, Machine, Visualize } from "effect-fsm"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as Diagram from "../bin/diagram.js"
import { Counter, Order } from "./fixtures/machines.js"
import { eventually } from "./utils/eventually.js"
import { runtimeOn } from "./utils/runtime.js"

// ---------------------------------------------------------------------------
// A machine with groups, stays, re-entry, both kinds of stop and several timeouts
// ---------------------------------------------------------------------------

const TicketState = Schema.Union(
  Schema.TaggedStruct("Open", { id: Schema.String }),
  Schema.TaggedStruct("Assigned", { id: Schema.String, agent: Schema.String }),
  Schema.TaggedStruct("Waiting", { id: Schema.String, agent: Schema.String, reminders: Schema.Number }),
  Schema.TaggedStruct("Escalated", { id: Schema.String }),
  Schema.TaggedStruct("Resolved", { id: Schema.String }),
  Schema.TaggedStruct("Closed", { id: Schema.String })
)
const TicketEvent = Schema.Union(
  Schema.TaggedStruct("Assign", { agent: Schema.String }),
  Schema.TaggedStruct("Reply", {}),
  Schema.TaggedStruct("Remind", {}),
  Schema.TaggedStruct("Escalate", {}),
  Schema.TaggedStruct("Ping", {}),
  Schema.TaggedStruct("Resolve", {}),
  Schema.TaggedStruct("Reopen", {}),
  Schema.TaggedStruct("Close", {}),
  Schema.TaggedStruct("Expire", {}),
  Schema.TaggedStruct("Comment", { text: Schema.String })
)

type TicketState = typeof TicketState.Type
type TicketEvent = typeof TicketEvent.Type

const ticketTransitions: Machine.Transitions<TicketState, TicketEvent> = {
  Open: {
    Assign: { to: "Assigned", guard: (_, e) => e.agent.length > 0, build: (s, e) => ({ id: s.id, agent: e.agent }) }
  },
  Assigned: {
    // Reassigning restarts the SLA timer.
    Assign: { to: "Assigned", reenter: true, build: (s, e) => ({ id: s.id, agent: e.agent }) },
    Reply: { to: "Waiting", build: (s) => ({ id: s.id, agent: s.agent, reminders: 0 }) },
    Escalate: { to: "Escalated", build: (s) => ({ id: s.id }) }
  },
  Waiting: {
    Reply: { to: "Assigned", build: (s) => ({ id: s.id, agent: s.agent }) },
    Remind: [
      { to: "Waiting", guard: (s) => s.reminders < 3, build: (s) => ({ id: s.id, agent: s.agent, reminders: s.reminders + 1 }) },
      { to: "Closed", stop: true, build: (s) => ({ id: s.id }) }
    ],
    Expire: { to: "Closed", stop: true, build: (s) => ({ id: s.id }) }
  },
  Escalated: {
    Ping: Machine.stay,
    // Overrides the Resolve group: an escalated ticket resolves for good.
    Resolve: { to: "Resolved", stop: true, build: (s) => ({ id: s.id }) }
  },
  Resolved: {
    Reopen: { to: "Open", build: (s) => ({ id: s.id }) },
    Close: Machine.stop
  }
}

const ticketGroups = (group: Machine.GroupBuilder<TicketState, TicketEvent>) => [
  group(["Open", "Assigned", "Waiting", "Escalated"], ["Resolve"], { to: "Resolved", build: (s) => ({ id: s.id }) }),
  group(["Open", "Assigned", "Waiting"], ["Comment"], Machine.stay)
]

const ticketTimeouts: Machine.Timeouts<TicketState, TicketEvent> = {
  Assigned: { sla: { after: "24 hours", event: { _tag: "Escalate" } } },
  Waiting: {
    remind: { after: (s) => (s.reminders === 0 ? "1 hour" : "90 minutes"), event: { _tag: "Remind" } },
    expire: { after: "14 days", event: { _tag: "Expire" } }
  },
  Escalated: {
    page: { after: "1 minute", event: { _tag: "Ping" } },
    nudge: { after: "10 seconds", event: { _tag: "Ping" } }
  },
  Resolved: { autoClose: { after: "7 days", event: { _tag: "Close" } } }
}

type Order = <T extends object>(o: T) => T

/** Puts the keys of an object, and of each object in it, through `order`. */
const twoLevels = <T extends object>(o: T, order: Order): T =>
  order(Object.fromEntries(Object.entries(o).map(([k, v]) => [k, typeof v === "object" && v !== null ? order(v) : v])) as T)

/**
 * The ticket machine, with the keys of its transitions and timeouts (and
 * its list of groups) put through `order`: the identity, or a reversal for
 * the determinism test.
 */
const makeTicket = (order: Order) =>
  Machine.make({
    name: "ticket",
    version: 1,
    state: TicketState,
    event: TicketEvent,
    initial: { _tag: "Open", id: "new" },
    transitions: twoLevels(ticketTransitions, order),
    groups: (group) => order(ticketGroups(group)),
    timeouts: twoLevels(ticketTimeouts, order)
  })

const identity: Order = (o) => o
const reversed: Order = <T extends object>(o: T): T =>
  (Array.isArray(o) ? [...o].reverse() : Object.fromEntries(Object.entries(o).reverse())) as T

const Ticket = makeTicket(identity)

// ---------------------------------------------------------------------------
// A machine whose state, event and timeout names Mermaid and GraphViz cannot take as written
// ---------------------------------------------------------------------------

const awkwardStates = [
  "In Review",
  "end",
  "a-b",
  "a_b",
  "Ünïcode ✓",
  "say \"hi\"",
  "x;y",
  "1st",
  "state",
  "[*]",
  "__start",
  "back\\slash",
  "%%c",
  "new\nline",
  "a:b#c{d}<e>"
] as const
const awkwardEvents = ["Go;Now", "#hash", "T:o"] as const

const AwkwardState = Schema.Union(...awkwardStates.map((tag) => Schema.TaggedStruct(tag, {})))
const AwkwardEvent = Schema.Union(...awkwardEvents.map((tag) => Schema.TaggedStruct(tag, {})))

const Awkward = Machine.make({
  name: "awk\"ward; #1",
  version: 1,
  state: AwkwardState,
  event: AwkwardEvent,
  initial: { _tag: "In Review" },
  // Built in a loop, so typed loosely: the shapes are what the diagrams read.
  transitions: Object.fromEntries(awkwardStates.map((tag, i) => [
    tag,
    {
      "Go;Now": awkwardStates[(i + 1) % awkwardStates.length],
      "#hash": Machine.stop,
      ...(tag === "end" ? { "T:o": "a_b" } : {})
    }
  ])) as Machine.Transitions<typeof AwkwardState.Type, typeof AwkwardEvent.Type>,
  timeouts: {
    end: {
      "t;1": { after: "90 minutes", event: { _tag: "T:o" } },
      "u\"2": { after: "1 second", event: { _tag: "Go;Now" } }
    }
  }
})

/** Mermaid's `#code;` entities, decoded as Mermaid renders them. */
const decodeMermaid = (text: string) => text.replace(/#(\d+);/g, (_, code: string) => String.fromCodePoint(Number(code)))

/** A DOT double-quoted string's content, as GraphViz shows it. */
const decodeDot = (quoted: string) =>
  quoted.slice(1, -1).replace(/\\(["\\n])/g, (_, c: string) => (c === "n" ? "\n" : c))

const dotQuoted = /"(?:[^"\\]|\\.)*"/g

describe("Visualize.mermaid", () => {
  it("draws the Order fixture", () => {
    expect(Visualize.mermaid(Order)).toMatchInlineSnapshot(`
      "---
      title: order
      ---
      stateDiagram-v2
        Pending
        Paid
        Shipped
        Delivered
        Cancelled
        Pending --> Paid : Pay [guard]
        Pending --> Cancelled : Cancel
        Pending --> Cancelled : ⏱ payment 5m (PaymentTimeout)
        Pending --> Pending : Note (stay)
        Paid --> Shipped : Ship
        Paid --> Cancelled : Cancel
        Paid --> Paid : Note (stay)
        Shipped --> Delivered : Deliver (stop)
        Shipped --> Shipped : Note (stay)
        Cancelled --> Cancelled : Cancel (stay)
        Delivered --> [*]
      "
    `)
  })

  it("draws the Counter fixture: static initial state, guard alternatives by position, re-entry", () => {
    expect(Visualize.mermaid(Counter)).toMatchInlineSnapshot(`
      "---
      title: counter
      ---
      stateDiagram-v2
        Even
        Odd
        [*] --> Even
        Even --> Even : Add [guard 1]
        Even --> Odd : Add [else]
        Even --> Even : Reset (re-enter)
        Odd --> Even : Add [guard 1]
        Odd --> Odd : Add [else]
        Odd --> Even : Reset
      "
    `)
  })

  it("draws groups, stays, re-entry, both kinds of stop and several timeouts", () => {
    expect(Visualize.mermaid(Ticket)).toMatchInlineSnapshot(`
      "---
      title: ticket
      ---
      stateDiagram-v2
        Open
        Assigned
        Waiting
        Escalated
        Resolved
        Closed
        [*] --> Open
        Open --> Assigned : Assign [guard]
        Open --> Resolved : Resolve
        Open --> Open : Comment (stay)
        Assigned --> Assigned : Assign (re-enter)
        Assigned --> Waiting : Reply
        Assigned --> Escalated : ⏱ sla 24h (Escalate)
        Assigned --> Resolved : Resolve
        Assigned --> Assigned : Comment (stay)
        Waiting --> Assigned : Reply
        Waiting --> Waiting : ⏱ remind f(state) (Remind) [guard 1]
        Waiting --> Closed : ⏱ remind f(state) (Remind) [else] (stop)
        Waiting --> Resolved : Resolve
        Waiting --> Closed : ⏱ expire 14d (Expire) (stop)
        Waiting --> Waiting : Comment (stay)
        Escalated --> Escalated : ⏱ nudge 10s, page 1m (Ping) (stay)
        Escalated --> Resolved : Resolve (stop)
        Resolved --> Open : Reopen
        Resolved --> [*] : ⏱ autoClose 7d (Close) (stop)
        Closed --> [*]
      "
    `)
  })

  it("uses guard names, direction, title and timeout marker options", () => {
    const text = Visualize.mermaid(Ticket, {
      guardNames: { Open: { Assign: "agent given" }, Waiting: { Remind: ["fewer than 3", "3 sent"] } },
      direction: "LR",
      title: false,
      timeoutMarker: "timeout"
    })
    expect(text.split("\n").slice(0, 2)).toEqual(["stateDiagram-v2", "  direction LR"])
    expect(text).toContain("  Open --> Assigned : Assign [agent given]\n")
    expect(text).toContain("  Waiting --> Waiting : timeout remind f(state) (Remind) [fewer than 3]\n")
    expect(text).toContain("  Waiting --> Closed : timeout remind f(state) (Remind) [3 sent] (stop)\n")
    expect(text).not.toContain("⏱")
  })

  it("rejects guard names for misspelt states and events at compile time", () => {
    // @ts-expect-error "Opn" is not a state of the ticket machine
    Visualize.mermaid(Ticket, { guardNames: { Opn: { Assign: "x" } } })
    // @ts-expect-error "Asign" is not an event of the ticket machine
    Visualize.mermaid(Ticket, { guardNames: { Open: { Asign: "x" } } })
    expect(Visualize.mermaid(Ticket, { guardNames: { Open: { Assign: "" } } })).toContain("Assign [guard]")
  })

  it("is deterministic: same output twice, whatever the key order of transitions, groups and timeouts", () => {
    const again = makeTicket(reversed)
    // The reversal really changes what the compiled machine holds in insertion order.
    expect([...again.timeouts.get("Escalated")!.map((t) => t.name)]).not.toEqual(
      [...Ticket.timeouts.get("Escalated")!.map((t) => t.name)]
    )
    expect([...again.table.get("Assigned")!.keys()]).not.toEqual([...Ticket.table.get("Assigned")!.keys()])
    expect(Visualize.mermaid(Ticket)).toBe(Visualize.mermaid(Ticket))
    expect(Visualize.mermaid(again)).toBe(Visualize.mermaid(Ticket))
    expect(Visualize.dot(again)).toBe(Visualize.dot(Ticket))
  })

  it("escapes awkward names into ids Mermaid takes and labels that decode back to the names", () => {
    const text = Visualize.mermaid(Awkward)
    const lines = text.trimEnd().split("\n")
    // YAML reads the title; Mermaid shows it without decoding entities.
    expect(lines.slice(0, 3)).toEqual(["---", "title: \"awk\\\"ward; #1\"", "---"])
    const body = lines.slice(4)
    const id = "[A-Za-z][A-Za-z0-9_]*"
    // What Mermaid's grammar could misread: only entities may carry `#`, and no `;`, `"` or `:` in text.
    const text_ = String.raw`(?:[^#;":\n]|#\d+;)*`
    const declaration = new RegExp(`^  state "(${text_})" as (${id})$`)
    const plain = new RegExp(`^  (${id})$`)
    const edge = new RegExp(`^  (${id}|\\[\\*\\]) --> (${id}|\\[\\*\\])(?: : (${text_}))?$`)
    const names = new Map<string, string>()
    for (const line of body) {
      const d = declaration.exec(line) ?? plain.exec(line)
      if (d !== null) {
        const [name, stateId] = d.length === 3 ? [decodeMermaid(d[1]!), d[2]!] : [d[1]!, d[1]!]
        expect(names.has(stateId), `id ${stateId} used twice`).toBe(false)
        names.set(stateId, name)
      } else {
        expect(line, "neither a state nor an edge").toMatch(edge)
      }
    }
    expect([...names.values()]).toEqual(awkwardStates)
    for (const reserved of ["end", "state", "root_start", "root_end"]) expect(names.has(reserved)).toBe(false)
    const labels = body.flatMap((line) => {
      const m = edge.exec(line)
      return m?.[3] === undefined ? [] : [[names.get(m[1]!), m[2] === "[*]" ? "[*]" : names.get(m[2]!), decodeMermaid(m[3])]]
    })
    expect(labels).toContainEqual(["In Review", "end", "Go;Now"])
    expect(labels).toContainEqual(["x;y", "[*]", "#hash (stop)"])
    expect(labels).toContainEqual(["end", "a_b", "⏱ t;1 1h30m (T:o)"])
    expect(labels).toContainEqual(["end", "a-b", "⏱ u\"2 1s (Go;Now)"])
    expect(labels).toContainEqual(["a:b#c{d}<e>", "In Review", "Go;Now"])
    expect(body).toContain("  [*] --> In_Review")
  })

  it("notes a timeout whose event its state does not handle, and never throws on such a machine", () => {
    const Broken = Machine.make({
      name: "broken",
      version: 1,
      state: Schema.Union(Schema.TaggedStruct("A", {}), Schema.TaggedStruct("B", {})),
      event: Schema.Union(Schema.TaggedStruct("Go", {}), Schema.TaggedStruct("Late", {})),
      transitions: { A: { Go: "B" } },
      timeouts: { A: { late: { after: "2 days", event: { _tag: "Late" } } } }
    })
    expect(Broken.problems).not.toEqual([])
    expect(Visualize.mermaid(Broken)).toContain("  note right of A : ⏱ late 2d sends Late, which A does not handle\n")
    expect(Visualize.dot(Broken)).toContain(
      "  \"__note_1\" [shape=note, color=red, label=\"late 2d sends Late, which A does not handle\"];\n"
    )
  })
})

describe("Visualize.dot", () => {
  it("draws the Order fixture", () => {
    expect(Visualize.dot(Order)).toMatchInlineSnapshot(`
      "digraph "order" {
        rankdir=TB;
        fontname="Helvetica";
        label="order";
        labelloc=t;
        node [shape=circle, fontname="Helvetica"];
        edge [fontname="Helvetica", fontsize=10];
        "Pending";
        "Paid";
        "Shipped";
        "Delivered" [shape=doublecircle];
        "Cancelled";
        "Pending" -> "Paid" [label="Pay [guard]"];
        "Pending" -> "Cancelled" [label="Cancel"];
        "Pending" -> "Cancelled" [label="payment 5m (PaymentTimeout)", style=dashed];
        "Pending" -> "Pending" [label="Note (stay)"];
        "Paid" -> "Shipped" [label="Ship"];
        "Paid" -> "Cancelled" [label="Cancel"];
        "Paid" -> "Paid" [label="Note (stay)"];
        "Shipped" -> "Delivered" [label="Deliver (stop)"];
        "Shipped" -> "Shipped" [label="Note (stay)"];
        "Cancelled" -> "Cancelled" [label="Cancel (stay)"];
      }
      "
    `)
  })

  it("draws the Counter fixture", () => {
    expect(Visualize.dot(Counter)).toMatchInlineSnapshot(`
      "digraph "counter" {
        rankdir=TB;
        fontname="Helvetica";
        label="counter";
        labelloc=t;
        node [shape=circle, fontname="Helvetica"];
        edge [fontname="Helvetica", fontsize=10];
        "Even";
        "Odd";
        "__start" [shape=point, width=0.15, label=""];
        "__start" -> "Even";
        "Even" -> "Even" [label="Add [guard 1]"];
        "Even" -> "Odd" [label="Add [else]"];
        "Even" -> "Even" [label="Reset (re-enter)"];
        "Odd" -> "Even" [label="Add [guard 1]"];
        "Odd" -> "Odd" [label="Add [else]"];
        "Odd" -> "Even" [label="Reset"];
      }
      "
    `)
  })

  it("draws the ticket machine: dashed timeouts, doublecircle finals, start and end points", () => {
    expect(Visualize.dot(Ticket, { direction: "LR" })).toMatchInlineSnapshot(`
      "digraph "ticket" {
        rankdir=LR;
        fontname="Helvetica";
        label="ticket";
        labelloc=t;
        node [shape=circle, fontname="Helvetica"];
        edge [fontname="Helvetica", fontsize=10];
        "Open";
        "Assigned";
        "Waiting";
        "Escalated";
        "Resolved";
        "Closed" [shape=doublecircle];
        "__start" [shape=point, width=0.15, label=""];
        "__start" -> "Open";
        "__end" [shape=point, width=0.15, peripheries=2, label=""];
        "Open" -> "Assigned" [label="Assign [guard]"];
        "Open" -> "Resolved" [label="Resolve"];
        "Open" -> "Open" [label="Comment (stay)"];
        "Assigned" -> "Assigned" [label="Assign (re-enter)"];
        "Assigned" -> "Waiting" [label="Reply"];
        "Assigned" -> "Escalated" [label="sla 24h (Escalate)", style=dashed];
        "Assigned" -> "Resolved" [label="Resolve"];
        "Assigned" -> "Assigned" [label="Comment (stay)"];
        "Waiting" -> "Assigned" [label="Reply"];
        "Waiting" -> "Waiting" [label="remind f(state) (Remind) [guard 1]", style=dashed];
        "Waiting" -> "Closed" [label="remind f(state) (Remind) [else] (stop)", style=dashed];
        "Waiting" -> "Resolved" [label="Resolve"];
        "Waiting" -> "Closed" [label="expire 14d (Expire) (stop)", style=dashed];
        "Waiting" -> "Waiting" [label="Comment (stay)"];
        "Escalated" -> "Escalated" [label="nudge 10s, page 1m (Ping) (stay)", style=dashed];
        "Escalated" -> "Resolved" [label="Resolve (stop)"];
        "Resolved" -> "Open" [label="Reopen"];
        "Resolved" -> "__end" [label="autoClose 7d (Close) (stop)", style=dashed];
      }
      "
    `)
  })

  it("quotes every id and label so that they decode back to the names, with pseudo nodes that collide with none", () => {
    const text = Visualize.dot(Awkward)
    const lines = text.trimEnd().split("\n")
    expect(lines[0]).toBe(String.raw`digraph "awk\"ward; #1" {`)
    expect(lines.at(-1)).toBe("}")
    const statement = new RegExp(
      String.raw`^  (?:"(?:[^"\\]|\\.)*"(?: -> "(?:[^"\\]|\\.)*")?(?: \[[^"\]]*(?:"(?:[^"\\]|\\.)*"[^"\]]*)*\])?|[a-z]+(?: \[.*\])?=?.*);$`
    )
    for (const line of lines.slice(1, -1)) expect(line).toMatch(statement)

    const nodes = new Map<string, string>()
    for (const line of lines) {
      const m = /^  ("(?:[^"\\]|\\.)*")(?: \[(.*)\])?;$/.exec(line)
      if (m === null) continue
      const label = /label=("(?:[^"\\]|\\.)*")/.exec(m[2] ?? "")
      nodes.set(decodeDot(m[1]!), label === null ? decodeDot(m[1]!) : decodeDot(label[1]!))
    }
    // Every state is a node showing its name; GraphViz's own `%` ids are avoided.
    expect([...nodes.values()]).toEqual(expect.arrayContaining([...awkwardStates]))
    expect(nodes.size).toBe(awkwardStates.length + 2)
    expect([...nodes.keys()].some((id) => id.startsWith("%"))).toBe(false)
    // The start point is not the state named "__start".
    expect(text).toContain("  \"__start_2\" -> \"In Review\";\n")
    expect(text).toContain("  \"__start\" -> \"back\\\\slash\" [label=\"Go;Now\"];\n")
    const edges = lines.flatMap((line) => {
      const quoted = line.match(dotQuoted) ?? []
      return line.includes(" -> ") && line.includes("label=") ? [quoted.map(decodeDot)] : []
    })
    expect(edges).toContainEqual(["end", "a_b", "t;1 1h30m (T:o)"])
    expect(edges).toContainEqual(["say \"hi\"", "x;y", "Go;Now"])
    expect(edges).toContainEqual(["new\nline", "a:b#c{d}<e>", "Go;Now"])
    expect(text).toContain("  \"end\" -> \"a_b\" [label=\"t;1 1h30m (T:o)\", style=dashed];\n")
  })
})

describe("Visualize.formatDuration", () => {
  it("formats durations compactly", () => {
    expect(
      ["5 minutes", "24 hours", "36 hours", "48 hours", "10 seconds", "90 minutes", "1500 millis", "7 days", 0, "250 micros"]
        .map(Visualize.formatDuration)
    ).toEqual(["5m", "24h", "36h", "2d", "10s", "1h30m", "1s500ms", "7d", "0s", "250µs"])
    expect(Visualize.formatDuration(() => "1 hour")).toBe("f(state)")
    expect(Visualize.formatDuration(Duration.infinity)).toBe("∞")
    expect(Visualize.formatDuration(Infinity)).toBe("∞")
    expect(Visualize.formatDuration("soon")).toBe("invalid duration")
  })
})

// ---------------------------------------------------------------------------
// Traces
// ---------------------------------------------------------------------------

const startOfDay = Date.UTC(2024, 0, 15, 9, 0, 0)

/** Runs two orders on the in-memory store under TestClock and returns their histories. */
const runOrders = Effect.gen(function*() {
  yield* TestClock.setTime(startOfDay)
  const store = yield* Layer.build(EventStore.layerMemory)
  const { runtime } = yield* runtimeOn(store, { machines: [Order] })

  yield* runtime.create(Order, "o1", { _tag: "Pending", orderId: "o1" })
  yield* runtime.send(Order, "o1", { _tag: "Pay", amount: 42 }, { correlationId: "checkout-7" })
  yield* runtime.send(Order, "o1", { _tag: "Note", text: "gift wrap" }, { source: "outbox" })
  yield* TestClock.adjust("1 hour")
  yield* runtime.send(Order, "o1", { _tag: "Ship", tracking: "TRK-1" })
  yield* runtime.send(Order, "o1", { _tag: "Deliver" })

  yield* runtime.create(Order, "o2", { _tag: "Pending", orderId: "o2" })
  yield* TestClock.adjust("5 minutes")
  yield* eventually(
    Effect.filterOrFail(runtime.inspect(Order, "o2"), (v) => v.state._tag === "Cancelled", () => "still pending")
  )
  yield* runtime.send(Order, "o2", { _tag: "Cancel", reason: "again" })
  yield* runtime.stop(Order, "o2")

  return { o1: yield* runtime.history(Order, "o1"), o2: yield* runtime.history(Order, "o2") }
})

describe("Visualize.trace", () => {
  it.scoped("draws a real history: creation, a stopping transition, user and outbox sources", () =>
    Effect.gen(function*() {
      const { o1 } = yield* runOrders
      expect(Visualize.trace(o1, { machine: Order, instanceId: "o1" })).toMatchInlineSnapshot(`
        "sequenceDiagram
          participant user as User
          participant outbox as Outbox
          participant instance as order o1
          user->>instance: 1 · create<br/>2024-01-15T09:00:00.000Z
          Note right of instance: created in Pending
          user->>instance: 2 · Pay<br/>2024-01-15T09:00:00.000Z · correlation checkout-7
          Note right of instance: → Paid
          outbox-)instance: 3 · Note<br/>2024-01-15T09:00:00.000Z
          Note right of instance: stays in Paid
          user->>instance: 4 · Ship<br/>2024-01-15T10:00:00.000Z
          Note right of instance: → Shipped
          user->>instance: 5 · Deliver<br/>2024-01-15T10:00:00.000Z
          Note right of instance: → Delivered, stopped
        "
      `)
    }))

  it.scoped("draws a timeout firing, a stay and an explicit stop record", () =>
    Effect.gen(function*() {
      const { o2 } = yield* runOrders
      expect(o2.map((h) => h.metadata.source)).toEqual(["user", "timeout", "user", "user"])
      expect(Visualize.trace(o2, { machine: Order, instanceId: "o2", title: "order o2" })).toMatchInlineSnapshot(`
        "---
        title: order o2
        ---
        sequenceDiagram
          participant user as User
          participant timeout as ⏱ Timeout
          participant instance as order o2
          user->>instance: 1 · create<br/>2024-01-15T10:00:00.000Z
          Note right of instance: created in Pending
          timeout-->>instance: 2 · PaymentTimeout<br/>2024-01-15T10:05:00.000Z
          Note right of instance: → Cancelled
          user->>instance: 3 · Cancel<br/>2024-01-15T10:05:00.000Z
          Note right of instance: stays in Cancelled
          user->>instance: 4 · stop<br/>2024-01-15T10:05:00.000Z
          Note right of instance: stopped in Cancelled
        "
      `)
    }))

  it.scoped("without the machine, names outcomes from the stored state tags only", () =>
    Effect.gen(function*() {
      const { o1 } = yield* runOrders
      const withMachine = Visualize.trace(o1, { machine: Order })
      const without = Visualize.trace(o1)
      expect(withMachine).toContain("Note right of instance: → Delivered, stopped\n")
      expect(without).toContain("Note right of instance: → Delivered\n")
      expect(without).not.toContain("stopped")
      expect(without).toContain("participant instance as instance\n")
      // The same history draws the same text.
      expect(Visualize.trace(o1, { machine: Order })).toBe(withMachine)
    }))

  const metadata = (source: string, timestamp: number): FSMRuntime.HistoryEntry<never, never>["metadata"] => ({
    timestamp,
    source: source as "user",
    correlationId: null,
    node: null,
    commitId: null,
    timer: null
  })

  it("keeps odd input drawable: unknown sources, bad timestamps, tags Mermaid would misread, a tail without creation", () => {
    const history = [
      { _tag: "Event", seqNr: 7, stateTag: "A;B", schemaVersion: 1, metadata: metadata("cron", 0), event: { _tag: "Go;#1" } },
      { _tag: "Event", seqNr: 8, stateTag: "A;B", schemaVersion: 1, metadata: metadata("timeout", NaN), event: { _tag: "Tick" } },
      { _tag: "Stopped", seqNr: 9, stateTag: "A;B", schemaVersion: 1, metadata: metadata("user", 8.64e15 + 1) }
    ] as unknown as ReadonlyArray<FSMRuntime.HistoryEntry<Machine.StateOf<typeof Order>, Machine.EventOf<typeof Order>>>
    expect(Visualize.trace(history, { machine: Order })).toMatchInlineSnapshot(`
      "sequenceDiagram
        participant user as User
        participant timeout as ⏱ Timeout
        participant source_3 as cron
        participant instance as order
        source_3->>instance: 7 · Go#59;#35;1<br/>1970-01-01T00:00:00.000Z
        Note right of instance: → A#59;B
        timeout-->>instance: 8 · Tick<br/>invalid time NaN
        Note right of instance: stays in A#59;B
        user->>instance: 9 · stop<br/>invalid time 8640000000000001
        Note right of instance: stopped in A#59;B
      "
    `)
  })

  it("does not throw when replaying stored data through the machine throws", () => {
    const history = [
      {
        _tag: "Created",
        seqNr: 1,
        stateTag: "Even",
        schemaVersion: 1,
        metadata: metadata("user", 0),
        state: { _tag: "Even", count: 0, trail: null }
      },
      { _tag: "Event", seqNr: 2, stateTag: "Odd", schemaVersion: 1, metadata: metadata("user", 0), event: { _tag: "Add", by: 1 } }
    ] as unknown as ReadonlyArray<FSMRuntime.HistoryEntry<Machine.StateOf<typeof Counter>, Machine.EventOf<typeof Counter>>>
    expect(Machine.step(Counter, history[0]!._tag === "Created" ? history[0]!.state : undefined!, { _tag: "Add", by: 1 }))
      .toMatchObject({ _tag: "Failed", stage: "build" })
    expect(Visualize.trace(history, { machine: Counter })).toContain("  Note right of instance: → Odd\n")
  })
})

// ---------------------------------------------------------------------------
// bin/diagram.ts
// ---------------------------------------------------------------------------

describe("bin/diagram.ts", () => {
  const tempDir = Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "effect-fsm-diagram-"))),
    (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
  )

  it.scoped("writes a .mmd and a .dot per exported machine", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const out = path.join(dir, "nested", "diagrams")
      const written = yield* Diagram.diagram("test/fixtures/machines.ts", out)
      expect(written).toEqual(["counter.mmd", "counter.dot", "order.mmd", "order.dot"].map((f) => path.join(out, f)))
      expect(fs.readFileSync(path.join(out, "order.mmd"), "utf8")).toBe(Visualize.mermaid(Order))
      expect(fs.readFileSync(path.join(out, "order.dot"), "utf8")).toBe(Visualize.dot(Order))
      expect(fs.readFileSync(path.join(out, "counter.mmd"), "utf8")).toBe(Visualize.mermaid(Counter))
    }))

  it.scoped("fails with typed errors for a missing module and a module without machines", () =>
    Effect.gen(function*() {
      const dir = yield* tempDir
      const missing = yield* Effect.flip(Diagram.diagram("test/fixtures/nope.ts", dir))
      expect(missing).toMatchObject({ _tag: "ModuleNotFound", path: "test/fixtures/nope.ts" })
      const none = yield* Effect.flip(Diagram.diagram("test/utils/eventually.ts", dir))
      expect(none).toMatchObject({ _tag: "NoMachinesFound", path: "test/utils/eventually.ts" })
      expect(fs.readdirSync(dir)).toEqual([])
    }))

  it("finds machines by shape, once each, and ignores everything else", () => {
    const found = Diagram.findMachines({ b: Order, c: Counter, a: Order, make: Machine.make, n: 1, o: { name: "x" } })
    expect(found.map((f) => [f.exportName, f.machine.name])).toEqual([["a", "order"], ["c", "counter"]])
  })

  it.scoped("prints the error and sets exit code 1", () =>
    Effect.gen(function*() {
      const errors: Array<string> = []
      const original = console.error
      const before = process.exitCode
      console.error = (...args: Array<unknown>) => void errors.push(args.join(" "))
      const exitCode = yield* Effect.ensuring(
        Effect.zipRight(Diagram.main(["test/fixtures/nope.ts"]), Effect.sync(() => process.exitCode)),
        Effect.sync(() => {
          console.error = original
          process.exitCode = before
        })
      )
      expect(exitCode).toBe(1)
      expect(errors).toEqual([expect.stringMatching(/^diagram: ModuleNotFound: module not found: test\/fixtures\/nope\.ts/)])
    }))
})
