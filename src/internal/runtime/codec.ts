/**
 * A registered machine with its Schema codecs: the one place where the
 * runtime turns typed states and events into the JSON the stores see, and
 * back. Backends see encoded values only.
 *
 * @internal
 */
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as EventStore from "../../EventStore.js"
import type * as Machine from "../../Machine.js"
import type * as Core from "../core.js"
import { type MachineMetrics, machineMetrics } from "../machineMetrics.js"
import { describeValue } from "../describe.js"

type Tagged = Machine.Tagged

/** What a snapshot's `state` holds: the state and its armed deadlines. */
export interface SnapshotEnvelope {
  readonly value: Tagged
  readonly generation: number
  readonly deadlines: ReadonlyArray<Machine.Deadline<Tagged>>
}

export interface MachineCodec {
  readonly machine: Machine.Any
  readonly encodeState: (s: unknown) => Either.Either<unknown, ParseResult.ParseError>
  readonly decodeState: (u: unknown) => Either.Either<Tagged, ParseResult.ParseError>
  readonly encodeEvent: (e: unknown) => Either.Either<unknown, ParseResult.ParseError>
  readonly decodeEvent: (u: unknown) => Either.Either<Tagged, ParseResult.ParseError>
  readonly encodeSnapshot: (s: SnapshotEnvelope) => Either.Either<unknown, ParseResult.ParseError>
  readonly decodeSnapshot: (u: unknown) => Either.Either<SnapshotEnvelope, ParseResult.ParseError>
  /** The machine's own commands; a failure for a machine without a command schema. */
  readonly encodeCommand: (c: unknown) => Either.Either<unknown, ParseResult.ParseError>
  readonly decodeCommand: (u: unknown) => Either.Either<Tagged, ParseResult.ParseError>
  /** The machine's tagged metrics (`Metrics`), built once. */
  readonly metrics: MachineMetrics
}

export const makeCodec = (machine: Machine.Any): MachineCodec => {
  const state = machine.stateSchema as Schema.Schema<Tagged, unknown>
  const event = machine.eventSchema as Schema.Schema<Tagged, unknown>
  const envelope = Schema.Struct({
    value: state,
    generation: Schema.Number,
    deadlines: Schema.Array(Schema.Struct({ name: Schema.String, dueAt: Schema.Number, event }))
  }) as unknown as Schema.Schema<SnapshotEnvelope, unknown>
  return {
    machine,
    metrics: machineMetrics(machine.name),
    encodeState: safe(Schema.encodeUnknownEither(state)),
    decodeState: safe(Schema.decodeUnknownEither(state)),
    encodeEvent: safe(Schema.encodeUnknownEither(event)),
    decodeEvent: safe(Schema.decodeUnknownEither(event)),
    encodeSnapshot: safe(Schema.encodeUnknownEither(envelope)),
    decodeSnapshot: safe(Schema.decodeUnknownEither(envelope)),
    encodeCommand: Option.match(machine.commandSchema, {
      onNone: () => noCommandSchema,
      onSome: (schema) => safe(Schema.encodeUnknownEither(schema))
    }),
    decodeCommand: Option.match(machine.commandSchema, {
      onNone: () => noCommandSchema,
      onSome: (schema) => safe(Schema.decodeUnknownEither(schema))
    })
  }
}

const noCommandSchema = (u: unknown) =>
  Either.left(
    new ParseResult.ParseError({
      issue: new ParseResult.Type(Schema.Unknown.ast, u, "the machine has no command schema (its `command` option)")
    })
  )

/** An encoder of `schema` that never throws, for the schemas of a built-in command's target. */
export const safeEncoder = (schema: Schema.Schema<Tagged, unknown>) => safe(Schema.encodeUnknownEither(schema))

/**
 * A codec that never throws: a user's `Schema.transform` or filter may
 * throw, and odd input (a getter that throws) reaches the encoder as is.
 */
const safe = <A>(
  codec: (u: unknown) => Either.Either<A, ParseResult.ParseError>
) =>
(u: unknown): Either.Either<A, ParseResult.ParseError> => {
  try {
    return codec(u)
  } catch (error) {
    return Either.left(
      new ParseResult.ParseError({
        issue: new ParseResult.Type(Schema.Unknown.ast, u, `the schema threw: ${describeValue(error)}`)
      })
    )
  }
}

export const parseMessage = (error: ParseResult.ParseError): string => {
  try {
    return ParseResult.TreeFormatter.formatErrorSync(error)
  } catch {
    return error.message
  }
}

/** A stored record decoded for `Core.evolve`, or why it does not decode. */
export const decodeRecord = (
  codec: MachineCodec,
  record: EventStore.ReplayRecord
): Either.Either<Core.StoredRecord, string> => {
  if (record.tag === EventStore.StoppedTag) return Either.right({ _tag: "Stopped", seqNr: record.seqNr })
  if (record.tag === EventStore.CreatedTag) {
    const state = codec.decodeState(record.payload)
    return Either.isLeft(state)
      ? Either.left(parseMessage(state.left))
      : Either.right({ _tag: "Created", seqNr: record.seqNr, state: state.right, timestamp: record.timestamp })
  }
  const event = codec.decodeEvent(record.payload)
  if (Either.isLeft(event)) return Either.left(parseMessage(event.left))
  const timer = record.timer
  return Either.right({
    _tag: "Event",
    seqNr: record.seqNr,
    event: event.right,
    stateTag: record.stateTag,
    timestamp: record.timestamp,
    timer,
    // Written before commit ids and timer names were stored (SQL migration 2).
    legacyTimeout: timer === null && !record.hasCommitId && record.source === "timeout"
  })
}
