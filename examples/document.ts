/**
 * A document approval workflow.
 *
 *   Draft --Submit--> InReview --(enough distinct approvals)--> Approved
 *                        |   \--Reject--> Rejected
 *                        +--48 h without a decision--> Escalated --24 h--> Rejected
 *   InReview, Escalated --Withdraw--> Withdrawn      (one group entry)
 *
 * Shows state groups (any state of the review group may be withdrawn), a
 * multi-reviewer guard (distinct reviewers, a required count), and a timeout
 * escalation. Run it with `npx tsx examples/document.ts` (in memory, with
 * short timeouts).
 */
import { Console, Duration, Effect, Layer, Logger, LogLevel, Schema } from "effect"
import { EventStore, FSMRuntime, Machine } from "effect-fsm"
import { pathToFileURL } from "node:url"

const Review = {
  docId: Schema.String,
  author: Schema.String,
  required: Schema.Number,
  approvals: Schema.Array(Schema.String)
}

export const DocumentState = Schema.Union(
  Schema.TaggedStruct("Draft", { docId: Schema.String, author: Schema.String }),
  Schema.TaggedStruct("InReview", Review),
  Schema.TaggedStruct("Escalated", Review),
  Schema.TaggedStruct("Approved", { docId: Schema.String, approvals: Schema.Array(Schema.String) }),
  Schema.TaggedStruct("Rejected", { docId: Schema.String, reason: Schema.String }),
  Schema.TaggedStruct("Withdrawn", { docId: Schema.String })
)
export type DocumentState = typeof DocumentState.Type

export const DocumentEvent = Schema.Union(
  Schema.TaggedStruct("Submit", { required: Schema.Number }),
  Schema.TaggedStruct("Approve", { reviewer: Schema.String }),
  Schema.TaggedStruct("Reject", { reviewer: Schema.String, reason: Schema.String }),
  Schema.TaggedStruct("Withdraw", {}),
  Schema.TaggedStruct("ReviewOverdue", {}),
  Schema.TaggedStruct("EscalationOverdue", {})
)
export type DocumentEvent = typeof DocumentEvent.Type

type InReviewLike = Machine.Of<DocumentState, "InReview" | "Escalated">

/** A reviewer counts once, and never the author. */
const canApprove = (s: InReviewLike, reviewer: string) => reviewer !== s.author && !s.approvals.includes(reviewer)
const approvedBy = (s: InReviewLike, reviewer: string) => [...s.approvals, reviewer]
const completes = (s: InReviewLike, reviewer: string) => canApprove(s, reviewer) && approvedBy(s, reviewer).length >= s.required

/** The approval machine, with its timeouts as parameters so the demo can use seconds. */
export const makeDocument = (timeouts: { readonly review: Duration.DurationInput; readonly escalation: Duration.DurationInput }) =>
  Machine.make({
    name: "document",
    version: 1,
    state: DocumentState,
    event: DocumentEvent,
    transitions: {
      Draft: {
        Submit: {
          to: "InReview",
          guard: (_, e) => Number.isInteger(e.required) && e.required >= 1,
          build: (s, e) => ({ docId: s.docId, author: s.author, required: e.required, approvals: [] })
        }
      },
      InReview: {
        Approve: [
          { to: "Approved", guard: (s, e) => completes(s, e.reviewer), build: (s, e) => ({ docId: s.docId, approvals: approvedBy(s, e.reviewer) }) },
          // Same state, no re-entry: the review deadline keeps running.
          { to: "InReview", guard: (s, e) => canApprove(s, e.reviewer), build: (s, e) => ({ ...s, approvals: approvedBy(s, e.reviewer) }) }
        ],
        ReviewOverdue: { to: "Escalated", build: (s) => s }
      },
      Escalated: {
        Approve: [
          { to: "Approved", guard: (s, e) => completes(s, e.reviewer), build: (s, e) => ({ docId: s.docId, approvals: approvedBy(s, e.reviewer) }) },
          { to: "Escalated", guard: (s, e) => canApprove(s, e.reviewer), build: (s, e) => ({ ...s, approvals: approvedBy(s, e.reviewer) }) }
        ],
        EscalationOverdue: { to: "Rejected", stop: true, build: (s) => ({ docId: s.docId, reason: "no decision in time" }) }
      }
    },
    groups: (group) => [
      // Any state of the review may be withdrawn by its author, or rejected by a reviewer.
      group(["InReview", "Escalated"], ["Withdraw"], { to: "Withdrawn", stop: true, build: (s) => ({ docId: s.docId }) }),
      group(["InReview", "Escalated"], ["Reject"], {
        to: "Rejected",
        stop: true,
        guard: (s, e) => e.reviewer !== s.author,
        build: (s, e) => ({ docId: s.docId, reason: `${e.reviewer}: ${e.reason}` })
      })
    ],
    timeouts: {
      InReview: { review: { after: timeouts.review, event: { _tag: "ReviewOverdue" } } },
      Escalated: { escalation: { after: timeouts.escalation, event: { _tag: "EscalationOverdue" } } }
    }
  })

/** Production timeouts: 48 hours to review, then 24 hours after escalation. */
export const Document = makeDocument({ review: "48 hours", escalation: "24 hours" })

const main = Effect.gen(function*() {
  const Doc = makeDocument({ review: "1 second", escalation: "1 second" })
  const program = Effect.gen(function*() {
    const docs = yield* FSMRuntime.client(Doc)
    const show = (id: string) =>
      Effect.flatMap(docs.inspect(id), (v) => Console.log(`  ${id}: ${v.state._tag}${v.stopped ? " (final)" : ""}`))
    yield* docs.create("spec", { _tag: "Draft", docId: "spec", author: "ada" })
    yield* docs.send("spec", { _tag: "Submit", required: 2 })
    yield* docs.send("spec", { _tag: "Approve", reviewer: "grace" })
    const twice = yield* Effect.either(docs.send("spec", { _tag: "Approve", reviewer: "grace" }))
    if (twice._tag === "Left") yield* Console.log(`  spec: grace approving twice -> ${twice.left._tag}`)
    yield* docs.send("spec", { _tag: "Approve", reviewer: "linus" })
    yield* show("spec")

    yield* docs.create("memo", { _tag: "Draft", docId: "memo", author: "ada" })
    yield* docs.send("memo", { _tag: "Submit", required: 1 })
    yield* Console.log("  memo: waiting for its review deadline (1 s), then escalation (1 s) ...")
    yield* Effect.sleep(Duration.millis(2_500))
    yield* show("memo")

    yield* docs.create("draft", { _tag: "Draft", docId: "draft", author: "ada" })
    yield* docs.send("draft", { _tag: "Submit", required: 3 })
    yield* docs.send("draft", { _tag: "Withdraw" })
    yield* show("draft")
  })
  yield* program.pipe(Effect.provide(FSMRuntime.layer({ machines: [Doc] }).pipe(Layer.provide(EventStore.layerMemory))))
})

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main.pipe(Logger.withMinimumLogLevel(LogLevel.Warning), Effect.runPromise).catch((error) => {
    console.error(error)
    process.exitCode = 1
  })
}
