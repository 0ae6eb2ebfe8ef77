/**
 * The web inspector: the `Inspector` over HTTP, as a small JSON API and one
 * page that draws the machines (Mermaid, rendered in the browser from the
 * installed `mermaid` package), where their instances are, one instance's
 * path, and the dead letters. It needs no network: every asset is served by
 * this process, from this package and from `node_modules`.
 *
 * Safe by default: it binds to 127.0.0.1 and answers only requests whose
 * `Host` is the address it bound (no DNS rebinding); every query parameter
 * and body is decoded with Schema (a bad one is a 400 with a JSON message);
 * an unknown machine or instance is a 404; the page puts data in the DOM
 * only as text, under a Content-Security-Policy that runs no inline script,
 * and Mermaid runs with `securityLevel: "strict"` on text that `Visualize`
 * has entity-escaped. Re-drive and discard answer only when the server was
 * started with `allowActions` and the request carries the per-process
 * token (`x-effect-fsm-token`); otherwise they are 403.
 *
 * Used by `effect-fsm ui`; a subpath module (`effect-fsm/Ui`), not in the
 * index, since it brings in the Node HTTP server.
 *
 * @example
 * ```ts
 * import * as Ui from "effect-fsm/Ui"
 *
 * const program = Effect.gen(function*() {
 *   const server = yield* Ui.start({ machines: [Order], port: 4000, allowActions: true })
 *   console.log(`${server.url} (token ${server.token})`)
 *   return yield* Effect.never
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 */
import * as HttpRouter from "@effect/platform/HttpRouter"
import type * as HttpServerError from "@effect/platform/HttpServerError"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { createRequire } from "node:module"
import * as crypto from "node:crypto"
import * as fs from "node:fs"
import * as http from "node:http"
import * as EventStore from "./EventStore.js"
import * as Inspector from "./Inspector.js"
import type * as Machine from "./Machine.js"
import { pageHtml, pageScript, pageStyle } from "./ui/assets.js"
import * as Visualize from "./Visualize.js"
import { plain } from "./internal/plainJson.js"

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/**
 * What the app serves.
 *
 * @since 0.1.0
 */
export interface Options {
  /** The machines the inspector was built for (their diagrams are drawn from these). */
  readonly machines: ReadonlyArray<Machine.Any>
  /** Re-drive and discard dead letters (default `false`: read-only). */
  readonly allowActions?: boolean | undefined
  /** The token actions must carry; default a fresh random one (`makeToken`). */
  readonly token?: string | undefined
}

/**
 * A fresh random token (256 bits, base64url).
 *
 * @since 0.1.0
 */
export const makeToken = (): string => crypto.randomBytes(32).toString("base64url")

/**
 * The header carrying the token of an action.
 *
 * @since 0.1.0
 */
export const tokenHeader = "x-effect-fsm-token"

// ---------------------------------------------------------------------------
// Diagrams
// ---------------------------------------------------------------------------

const plainDeclaration = /^ {2}([A-Za-z][A-Za-z0-9_]*)$/
const aliasDeclaration = /^ {2}state "([^"]*)" as ([A-Za-z][A-Za-z0-9_]*)$/

/**
 * The state declarations of a `Visualize.mermaid` diagram: for each state
 * tag its line, Mermaid id and (entity-escaped) label.
 */
const declarations = (diagram: ReadonlyArray<string>) => {
  const found = new Map<string, { readonly line: number; readonly id: string; readonly label: string }>()
  const start = diagram.indexOf("stateDiagram-v2")
  for (let line = start + 1; line < diagram.length; line++) {
    const text = diagram[line]!
    if (text === "  direction LR") continue
    const plain = plainDeclaration.exec(text)
    const alias = plain === null ? aliasDeclaration.exec(text) : null
    if (plain !== null) found.set(plain[1]!, { line, id: plain[1]!, label: plain[1]! })
    else if (alias !== null) {
      const tag = alias[1]!.replace(/#(\d+);/g, (_, code: string) => String.fromCodePoint(Number(code)))
      found.set(tag, { line, id: alias[2]!, label: alias[1]! })
    } else break
  }
  return found
}

/**
 * The machine's diagram (`Visualize.mermaid`) with the number of its
 * instances in each state on the state (`Paid (12)`, stopped ones
 * included), occupied states styled `occupied`, and `current` (one
 * instance's state) styled `current`.
 *
 * @example
 * ```ts
 * Ui.diagram(Order, { counts: [{ stateTag: "Paid", stopped: false, count: 12 }], current: "Paid" })
 * // ... state "Paid (12)" as Paid ... class Paid current
 * ```
 *
 * @since 0.1.0
 */
export const diagram = (
  machine: Machine.Any,
  options?: {
    readonly counts?: ReadonlyArray<EventStore.StateCount> | undefined
    readonly current?: string | undefined
  }
): string => {
  const lines = Visualize.mermaid(machine).trimEnd().split("\n")
  const states = declarations(lines)
  const totals = new Map<string, number>()
  for (const count of options?.counts ?? []) totals.set(count.stateTag, (totals.get(count.stateTag) ?? 0) + count.count)
  const extra: Array<string> = []
  if (options?.counts !== undefined) {
    for (const [tag, state] of states) {
      lines[state.line] = `  state "${state.label} (${totals.get(tag) ?? 0})" as ${state.id}`
    }
    const occupied = [...states].filter(([tag]) => (totals.get(tag) ?? 0) > 0).map(([, state]) => state.id)
    if (occupied.length > 0) {
      extra.push("  classDef occupied fill:#dbeafe,stroke:#1d4ed8,stroke-width:2px", `  class ${occupied.join(",")} occupied`)
    }
  }
  const current = options?.current === undefined ? undefined : states.get(options.current)
  if (current !== undefined) {
    extra.push("  classDef current fill:#fde68a,stroke:#b45309,stroke-width:3px", `  class ${current.id} current`)
  }
  return [...lines, ...extra].join("\n") + "\n"
}

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

const MachineName = Schema.String.pipe(Schema.minLength(1), Schema.maxLength(1000))
const InstanceId = Schema.String.pipe(Schema.minLength(1), Schema.maxLength(10_000))
const WholeNumber = (min: number, max: number) =>
  Schema.NumberFromString.pipe(Schema.int(), Schema.between(min, max))

/** A duration as people write it (`"10 minutes"`, `"2 hours"`), as milliseconds. */
const DurationText = Schema.transformOrFail(Schema.String, Schema.Number, {
  strict: true,
  decode: (text, _, ast) => {
    const decoded = Duration.decodeUnknown(text)
    return Option.isSome(decoded) && Duration.isFinite(decoded.value)
      ? ParseResult.succeed(Duration.toMillis(decoded.value))
      : ParseResult.fail(new ParseResult.Type(ast, text, `expected a duration such as "10 minutes", got ${JSON.stringify(text)}`))
  },
  encode: (millis) => ParseResult.succeed(`${millis} millis`)
})

/** An instance-page cursor: base64url of `[enteredAt, instanceId]`. */
const Cursor = Schema.transformOrFail(Schema.String, Schema.Struct({ enteredAt: Schema.Number, instanceId: Schema.String }), {
  strict: true,
  decode: (text, _, ast) => {
    const bad = ParseResult.fail(new ParseResult.Type(ast, text, "after: not a cursor from a previous page"))
    try {
      const decoded: unknown = JSON.parse(Buffer.from(text, "base64url").toString("utf8"))
      return Array.isArray(decoded) && decoded.length === 2 && Number.isSafeInteger(decoded[0]) &&
          typeof decoded[1] === "string"
        ? ParseResult.succeed({ enteredAt: decoded[0] as number, instanceId: decoded[1] })
        : bad
    } catch {
      return bad
    }
  },
  encode: (cursor) => ParseResult.succeed(encodeCursor(cursor))
})

const encodeCursor = (cursor: EventStore.InstanceCursor): string =>
  Buffer.from(JSON.stringify([cursor.enteredAt, cursor.instanceId])).toString("base64url")

const MachineQuery = Schema.Struct({ machine: MachineName })

const InstancesQuery = Schema.Struct({
  machine: MachineName,
  state: Schema.optional(Schema.String.pipe(Schema.minLength(1))),
  olderThan: Schema.optional(DurationText),
  stopped: Schema.optional(Schema.Literal("true", "false")),
  id: Schema.optional(InstanceId),
  correlationId: Schema.optional(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(1000))),
  after: Schema.optional(Cursor),
  limit: Schema.optionalWith(WholeNumber(1, 1000), { default: () => 50 })
})

const InstanceQuery = Schema.Struct({ machine: MachineName, id: InstanceId })

const HistoryQuery = Schema.Struct({
  machine: MachineName,
  id: InstanceId,
  fromSeqNr: Schema.optionalWith(WholeNumber(1, Number.MAX_SAFE_INTEGER), { default: () => 1 }),
  limit: Schema.optionalWith(WholeNumber(1, 1000), { default: () => 100 })
})

const TimersQuery = Schema.Struct({
  machine: MachineName,
  within: Schema.optionalWith(DurationText, { default: () => 3_600_000 }),
  limit: Schema.optionalWith(WholeNumber(1, 1000), { default: () => 100 })
})

/**
 * The body of `POST /api/actions/redrive` and `/api/actions/discard`: a
 * dead-lettered timer (by name) or outbox command (by `seqNr` and `index`).
 *
 * @since 0.1.0
 */
export const ActionTarget = Schema.Union(
  Schema.Struct({ kind: Schema.Literal("timer"), machine: MachineName, instanceId: InstanceId, name: Schema.String }),
  Schema.Struct({
    kind: Schema.Literal("command"),
    machine: MachineName,
    instanceId: InstanceId,
    seqNr: Schema.Int.pipe(Schema.positive()),
    index: Schema.Int.pipe(Schema.nonNegative())
  })
)

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------


const securityHeaders = {
  "cache-control": "no-store",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY"
}

const json = (body: unknown, status = 200) =>
  HttpServerResponse.text(JSON.stringify(plain(body)), {
    status,
    contentType: "application/json; charset=utf-8",
    headers: securityHeaders
  })

const problem = (status: number, error: string, message: string) => json({ error, message }, status)

/** A Mermaid-rendering page needs inline styles (in the SVG); scripts come from this server only. */
const pagePolicy = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
  "font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

const asset = (body: string | Uint8Array, contentType: string) =>
  (typeof body === "string" ? HttpServerResponse.text(body, { contentType }) : HttpServerResponse.uint8Array(body, { contentType }))
    .pipe(HttpServerResponse.setHeaders({ ...securityHeaders, "content-security-policy": pagePolicy }))

/** The first issue of a decoding failure, with where it is: `limit: Expected a number between 1 and 1000, actual 0`. */
const parseMessage = (error: ParseResult.ParseError): string => {
  const issue = ParseResult.ArrayFormatter.formatErrorSync(error)[0]
  if (issue === undefined) return "bad request"
  return issue.path.length === 0 ? issue.message : `${issue.path.map(String).join(".")}: ${issue.message}`
}

/** Why a request failed, as a status and a JSON message. */
const failureResponse = (error: unknown) => {
  const tag = typeof error === "object" && error !== null && "_tag" in error ? String(error._tag) : "Error"
  const message = typeof error === "object" && error !== null && "message" in error ? String(error.message) : String(error)
  switch (tag) {
    case "ParseError":
      return problem(400, "BadRequest", ParseResult.isParseError(error) ? parseMessage(error) : message)
    case "RequestError":
      return problem(400, "BadRequest", "the request body is not JSON")
    case "InvalidQuery":
    case "InvalidInput":
    case "InvalidInstanceId":
      return problem(400, tag, message)
    case "MachineNotRegistered":
    case "InstanceNotFound":
    case "NotFound":
      return problem(404, tag, message)
    case "Forbidden":
      return problem(403, tag, message)
    case "PersistenceError":
      return problem(503, tag, message)
    default:
      return problem(500, tag, message)
  }
}

class Forbidden extends Schema.TaggedError<Forbidden>()("Forbidden", { message: Schema.String }) {}
class NotFound extends Schema.TaggedError<NotFound>()("NotFound", { message: Schema.String }) {}

const sameToken = (given: string, expected: string): boolean => {
  const a = Buffer.from(given)
  const b = Buffer.from(expected)
  return a.length === b.length && crypto.timingSafeEqual(a, b)
}

// ---------------------------------------------------------------------------
// The app
// ---------------------------------------------------------------------------

/** The `mermaid` package's self-contained browser bundle, read once (5 MB). */
const mermaidBundle = (): Effect.Effect<Uint8Array, NotFound> => {
  let bundle: Uint8Array | undefined
  return Effect.suspend(() =>
    bundle !== undefined ? Effect.succeed(bundle) : Effect.try({
      try: () => (bundle = fs.readFileSync(createRequire(import.meta.url).resolve("mermaid/dist/mermaid.min.js"))),
      catch: () => new NotFound({ message: "the mermaid package is not installed" })
    })
  )
}

/**
 * The HTTP app: the page (`/`, `/ui.js`, `/ui.css`, `/mermaid.min.js`) and
 * the JSON API under `/api` (every parameter in the query string):
 *
 * - `GET /api/meta`: the machines, whether actions are allowed.
 * - `GET /api/machine?machine=`: its diagram with live counts, the counts, the timers due within the hour.
 * - `GET /api/instances?machine=&state=&olderThan=&stopped=&id=&correlationId=&after=&limit=`: a keyset page
 *   (by `id` or `correlationId`: the matching instances).
 * - `GET /api/instance?machine=&id=`: detail, highlighted diagram, trace, first page of history.
 * - `GET /api/history?machine=&id=&fromSeqNr=&limit=`: a page of the stored log.
 * - `GET /api/timers?machine=&within=&limit=`: live timers due soon.
 * - `GET /api/dead-letters?machine=`: dead-lettered timers and commands.
 * - `POST /api/actions/redrive`, `POST /api/actions/discard`: body `ActionTarget`, header `x-effect-fsm-token`.
 *
 * @since 0.1.0
 */
export const router = (options: Options & { readonly token: string }) => {
  const machines = new Map(options.machines.map((machine) => [machine.name, machine]))
  const allowActions = options.allowActions === true
  const mermaid = mermaidBundle()

  const machineNamed = (name: string) => {
    const machine = machines.get(name)
    return machine === undefined
      ? Effect.fail(new NotFound({ message: `unknown machine ${JSON.stringify(name)}` }))
      : Effect.succeed(machine)
  }

  const query = <A, I extends Readonly<Record<string, string | ReadonlyArray<string> | undefined>>>(
    schema: Schema.Schema<A, I>
  ) => HttpServerRequest.schemaSearchParams(schema, { errors: "first", onExcessProperty: "ignore" })

  const api = <E>(
    handler: Effect.Effect<unknown, E, Inspector.Inspector | HttpServerRequest.HttpServerRequest | HttpServerRequest.ParsedSearchParams>
  ) => handler.pipe(Effect.flatMap((body) => json(body)), Effect.catchAll(failureResponse))

  const action = (verb: "redrive" | "discard") =>
    api(Effect.gen(function*() {
      if (!allowActions) {
        return yield* new Forbidden({ message: "actions are off: start the inspector with --allow-actions" })
      }
      const request = yield* HttpServerRequest.HttpServerRequest
      const given = request.headers[tokenHeader]
      if (typeof given !== "string" || !sameToken(given, options.token)) {
        return yield* new Forbidden({ message: `missing or wrong ${tokenHeader} header (the token printed at start-up)` })
      }
      const target = yield* HttpServerRequest.schemaBodyJson(ActionTarget)
      yield* machineNamed(target.machine)
      const inspector = yield* Inspector.Inspector
      const done = target.kind === "timer"
        ? yield* (verb === "redrive" ? inspector.redriveTimer : inspector.discardTimer)({
          machine: target.machine,
          instanceId: target.instanceId,
          name: target.name
        })
        : yield* (verb === "redrive" ? inspector.redriveCommand : inspector.discardCommand)({
          machine: target.machine,
          instanceId: target.instanceId,
          seqNr: target.seqNr,
          index: target.index
        })
      if (!done) {
        return yield* new NotFound({
          message: `${target.machine}/${target.instanceId} has no dead-lettered ${
            target.kind === "timer" ? `timer ${JSON.stringify(target.name)}` : `command ${target.seqNr}:${target.index}`
          }`
        })
      }
      return { [verb === "redrive" ? "redriven" : "discarded"]: target }
    }))

  return HttpRouter.empty.pipe(
    HttpRouter.get("/", Effect.succeed(asset(pageHtml, "text/html; charset=utf-8"))),
    HttpRouter.get("/ui.js", Effect.succeed(asset(pageScript, "text/javascript; charset=utf-8"))),
    HttpRouter.get("/ui.css", Effect.succeed(asset(pageStyle, "text/css; charset=utf-8"))),
    HttpRouter.get(
      "/mermaid.min.js",
      Effect.map(mermaid, (bundle) => asset(bundle, "text/javascript; charset=utf-8")).pipe(
        Effect.catchAll(failureResponse)
      )
    ),
    HttpRouter.get(
      "/api/meta",
      api(Effect.succeed({ machines: [...machines.keys()], allowActions, tokenHeader }))
    ),
    HttpRouter.get(
      "/api/machine",
      api(Effect.gen(function*() {
        const params = yield* query(MachineQuery)
        const machine = yield* machineNamed(params.machine)
        const inspector = yield* Inspector.Inspector
        const counts = yield* inspector.counts(machine.name)
        const timers = yield* inspector.upcomingTimers(machine.name, { limit: 100 })
        return { name: machine.name, diagram: diagram(machine, { counts }), counts, upcomingTimers: timers }
      }))
    ),
    HttpRouter.get(
      "/api/instances",
      api(Effect.gen(function*() {
        const params = yield* query(InstancesQuery)
        const machine = yield* machineNamed(params.machine)
        const inspector = yield* Inspector.Inspector
        if (params.id !== undefined) {
          // Search by id: that instance's row, whatever the other filters say.
          const found = yield* inspector.summary(machine.name, params.id)
          return { instances: Option.toArray(found), next: null }
        }
        if (params.correlationId !== undefined) {
          // Search by correlation id: the instances it touched (up to the page size).
          const instances = yield* inspector.byCorrelationId(machine.name, params.correlationId, { limit: params.limit })
          return { instances, next: null }
        }
        const page = yield* inspector.instances({
          machine: machine.name,
          stateTag: params.state,
          enteredBefore: params.olderThan === undefined ? undefined : (yield* Clock.currentTimeMillis) - params.olderThan,
          stopped: params.stopped === undefined ? undefined : params.stopped === "true",
          after: params.after,
          limit: params.limit
        })
        return { instances: page.instances, next: Option.map(page.next, encodeCursor) }
      }))
    ),
    HttpRouter.get(
      "/api/instance",
      api(Effect.gen(function*() {
        const params = yield* query(InstanceQuery)
        const machine = yield* machineNamed(params.machine)
        const inspector = yield* Inspector.Inspector
        const detail = yield* inspector.instance(machine.name, params.id)
        const history = yield* inspector.history(machine.name, params.id, { limit: 100 })
        const decoded = yield* Effect.either(inspector.decodedHistory(machine.name, params.id))
        return {
          ...detail,
          diagram: diagram(machine, { current: detail.summary.stateTag }),
          trace: Either.isRight(decoded)
            ? Visualize.trace(decoded.right.entries, { machine, instanceId: params.id })
            : null,
          traceError: Either.isLeft(decoded) ? decoded.left.message : null,
          history
        }
      }))
    ),
    HttpRouter.get(
      "/api/history",
      api(Effect.gen(function*() {
        const params = yield* query(HistoryQuery)
        const machine = yield* machineNamed(params.machine)
        const inspector = yield* Inspector.Inspector
        return yield* inspector.history(machine.name, params.id, { fromSeqNr: params.fromSeqNr, limit: params.limit })
      }))
    ),
    HttpRouter.get(
      "/api/timers",
      api(Effect.gen(function*() {
        const params = yield* query(TimersQuery)
        const machine = yield* machineNamed(params.machine)
        const inspector = yield* Inspector.Inspector
        const now = yield* Clock.currentTimeMillis
        return yield* inspector.upcomingTimers(machine.name, { before: now + params.within, limit: params.limit })
      }))
    ),
    HttpRouter.get(
      "/api/dead-letters",
      api(Effect.gen(function*() {
        const params = yield* query(MachineQuery)
        const machine = yield* machineNamed(params.machine)
        const inspector = yield* Inspector.Inspector
        return yield* inspector.deadLetters(machine.name)
      }))
    ),
    HttpRouter.post("/api/actions/redrive", action("redrive")),
    HttpRouter.post("/api/actions/discard", action("discard"))
  )
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/**
 * A running inspector: where it listens and the token of its actions.
 *
 * @since 0.1.0
 */
/**
 * The web inspector draws its diagrams with the `mermaid` package, an
 * optional peer dependency of effect-fsm (so that programs that never serve
 * the page do not install it): `npm install mermaid`.
 *
 * @since 0.1.0
 */
export class MermaidNotInstalled extends Schema.TaggedError<MermaidNotInstalled>()("MermaidNotInstalled", {}) {
  override get message() {
    return "the web inspector draws its diagrams with the mermaid package, which is not installed: npm install mermaid"
  }
}

export interface Server {
  readonly url: string
  readonly host: string
  readonly port: number
  readonly token: string
  readonly allowActions: boolean
}

/**
 * Whether `host` is a loopback address: only this machine can connect.
 *
 * @since 0.1.0
 */
export const isLoopback = (host: string): boolean => host === "127.0.0.1" || host === "::1" || host === "localhost"

/**
 * Starts the inspector's HTTP server for the scope: on `host` (default
 * 127.0.0.1) and `port` (default 4000; 0 picks a free one).
 *
 * @example
 * ```ts
 * const server = yield* Ui.start({ machines: [Order], port: 0 })
 * // server.url: "http://127.0.0.1:43817/"
 * ```
 *
 * @since 0.1.0
 */
export const start = (
  options: Options & { readonly port?: number | undefined; readonly host?: string | undefined }
): Effect.Effect<Server, HttpServerError.ServeError | MermaidNotInstalled, Inspector.Inspector | Scope.Scope> =>
  Effect.gen(function*() {
    // Checked before listening: a page without its diagrams is no use.
    yield* Effect.try({
      try: () => createRequire(import.meta.url).resolve("mermaid/dist/mermaid.min.js"),
      catch: () => new MermaidNotInstalled()
    })
    const token = options.token ?? makeToken()
    const host = options.host ?? "127.0.0.1"
    const server = yield* NodeHttpServer.make(() => http.createServer(), { port: options.port ?? 4000, host })
    const port = server.address._tag === "TcpAddress" ? server.address.port : 0
    const hostPart = host.includes(":") ? `[${host}]` : host
    // Behind a loopback address, only a Host naming it is answered: a page
    // of another site that rebinds its name to 127.0.0.1 gets a 403.
    const allowedHosts = new Set(
      isLoopback(host) ? [`${hostPart}:${port}`, `localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`] : []
    )
    const app = yield* HttpRouter.toHttpApp(router({ ...options, token }))
    yield* server.serve(
      Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
        allowedHosts.size > 0 && !allowedHosts.has(request.headers["host"] ?? "")
          ? problem(403, "Forbidden", "unexpected Host header")
          : app).pipe(
          Effect.catchTag("RouteNotFound", () => problem(404, "NotFound", "no such page")),
          Effect.catchAllCause(() => problem(500, "InternalError", "internal error"))
        )
    )
    return { url: `http://${hostPart}:${port}/`, host, port, token, allowActions: options.allowActions === true }
  })
