/**
 * The web inspector's HTTP API (src/Ui.ts), through the real server on a
 * free port, on SQLite and PostgreSQL (a fresh schema; skipped without
 * PostgreSQL, failing under CI=true). The data is the order demo's plus a
 * few orders (test/utils/uiData.ts), one of them hostile: an id, a payload
 * and an error text made of markup, quotes and non-ASCII. Each backend has
 * a read-only server and one started with actions on (on SQLite over a
 * copy of the file, since actions write).
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Redacted, Scope } from "effect"
import * as Ui from "effect-fsm/Ui"
import * as fs from "node:fs"
import { spawn } from "node:child_process"
import * as http from "node:http"
import * as os from "node:os"
import * as path from "node:path"
import { Order } from "../examples/order.js"
import { postgres } from "./utils/backends.js"
import * as Pg from "./utils/pg.js"
import { hostileError, hostileId, hostileOrderId, makeData, makePgData, pgTablePrefix, serve } from "./utils/uiData.js"

interface Target {
  readOnly: Ui.Server
  actions: Ui.Server
}

const scope = Effect.runSync(Scope.make())
let directory = ""
const targets: Record<"sqlite" | "postgres", Target | undefined> = { sqlite: undefined, postgres: undefined }
const pgEnabled = postgres.skip === undefined
let pgFailure: unknown = undefined

const start = (database: Parameters<typeof serve>[0], allowActions: boolean) =>
  Effect.runPromise(Scope.extend(serve(database, { allowActions }), scope))

beforeAll(async () => {
  directory = fs.mkdtempSync(path.join(os.tmpdir(), "effect-fsm-ui-"))
  const sqlite = async () => {
    const filename = path.join(directory, "orders.db")
    await Effect.runPromise(makeData(filename))
    const copy = path.join(directory, "actions.db")
    fs.copyFileSync(filename, copy)
    targets.sqlite = { readOnly: await start({ db: filename }, false), actions: await start({ db: copy }, true) }
  }
  const pg = async () => {
    const schema = await Effect.runPromise(Scope.extend(Pg.freshSchema, scope))
    await Effect.runPromise(makePgData(schema))
    // As `effect-fsm ui --db postgres://... --schema ... --table-prefix order_demo_` is given it.
    const database = { db: Redacted.value(Pg.clientConfig().url!), schema, tablePrefix: pgTablePrefix }
    targets.postgres = { readOnly: await start(database, false), actions: await start(database, true) }
  }
  // Under CI an unreachable PostgreSQL is not skipped (see ./utils/backends.ts): its tests fail with the reason.
  const [onSqlite, onPg] = await Promise.allSettled([sqlite(), pgEnabled ? pg() : Promise.resolve()])
  if (onSqlite.status === "rejected") throw onSqlite.reason
  if (onPg.status === "rejected") pgFailure = onPg.reason
}, 120_000)

afterAll(async () => {
  await Effect.runPromise(Scope.close(scope, Exit.void))
  if (directory !== "") fs.rmSync(directory, { recursive: true, force: true })
})

interface Reply {
  readonly status: number
  readonly headers: Headers
  readonly body: any
}

const call = async (server: Ui.Server, pathAndQuery: string, init?: RequestInit): Promise<Reply> => {
  const response = await fetch(new URL(pathAndQuery, server.url), init)
  const text = await response.text()
  const isJson = (response.headers.get("content-type") ?? "").startsWith("application/json")
  return { status: response.status, headers: response.headers, body: isJson ? JSON.parse(text) : text }
}

const get = (server: Ui.Server, endpoint: string, params: Record<string, string> = {}) =>
  call(server, `/api/${endpoint}?${new URLSearchParams(params).toString()}`)

const post = (server: Ui.Server, verb: string, body: unknown, token?: string) =>
  call(server, `/api/actions/${verb}`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(token === undefined ? {} : { [Ui.tokenHeader]: token }) },
    body: typeof body === "string" ? body : JSON.stringify(body)
  })

/** A 4xx with a JSON message. */
const refused = (reply: Reply, status: number) => {
  expect({ status: reply.status, type: typeof reply.body?.message }).toEqual({ status, type: "string" })
  return reply.body.message as string
}

const ids = (reply: Reply) => (reply.body.instances as ReadonlyArray<{ instanceId: string }>).map((row) => row.instanceId)

for (const backend of ["sqlite", "postgres"] as const) {
  const skip = backend === "postgres" && !pgEnabled
  describe.skipIf(skip)(`the web inspector's API on ${backend}`, () => {
    const target = () => {
      const found = targets[backend]
      if (found === undefined) {
        throw new Error(`${backend}: no server (its data could not be made): ${String(backend === "postgres" ? pgFailure : "")}`)
      }
      return found
    }

    it("meta, and a machine: its diagram with the live count of each state, its timers due within the hour", async () => {
      const { readOnly } = target()
      expect((await get(readOnly, "meta")).body).toEqual({ machines: ["order"], allowActions: false, tokenHeader: Ui.tokenHeader })
      const machine = await get(readOnly, "machine", { machine: "order" })
      expect(machine.status).toBe(200)
      expect(machine.body.counts).toEqual([
        { stateTag: "Cancelled", stopped: true, count: 1 },
        { stateTag: "Charging", stopped: false, count: 1 },
        { stateTag: "Delivered", stopped: false, count: 1 },
        { stateTag: "Pending", stopped: false, count: 3 },
        { stateTag: "Shipped", stopped: false, count: 1 }
      ])
      for (const line of ['state "Pending (3)" as Pending', 'state "Paid (0)" as Paid', 'state "Cancelled (1)" as Cancelled']) {
        expect(machine.body.diagram).toContain(`  ${line}\n`)
      }
      expect(machine.body.diagram).toContain("  class Pending,Charging,Shipped,Delivered,Cancelled occupied\n")
      // order-4's payment timer is live (order-5's and the hostile one's are dead-lettered).
      expect(machine.body.upcomingTimers.map((t: any) => [t.instanceId, t.name])).toEqual([["order-4", "payment"]])
    })

    it("instances: keyset pages, by state, by stoppedness, in their state longer than D, by id", async () => {
      const { readOnly } = target()
      const first = await get(readOnly, "instances", { machine: "order", limit: "4" })
      expect(first.status).toBe(200)
      expect(typeof first.body.next).toBe("string")
      const rest = await get(readOnly, "instances", { machine: "order", after: first.body.next })
      expect(rest.body.next).toBeNull()
      expect([...ids(first), ...ids(rest)].sort()).toEqual(
        ["order-1", "order-2", "order-3", "order-4", "order-5", "order-6", hostileId].sort()
      )
      expect(ids(await get(readOnly, "instances", { machine: "order", state: "Pending" })).sort()).toEqual(
        ["order-4", "order-5", hostileId].sort()
      )
      expect(ids(await get(readOnly, "instances", { machine: "order", stopped: "true" }))).toEqual(["order-3"])
      expect(ids(await get(readOnly, "instances", { machine: "order", olderThan: "1 hour" }))).toEqual([])
      expect(ids(await get(readOnly, "instances", { machine: "order", olderThan: "0 millis" }))).toHaveLength(7)
      expect(ids(await get(readOnly, "instances", { machine: "order", id: hostileId }))).toEqual([hostileId])
      expect(ids(await get(readOnly, "instances", { machine: "order", id: "order-99" }))).toEqual([])
      expect(ids(await get(readOnly, "instances", { machine: "order", correlationId: "checkout-77" }))).toEqual(["order-4", "order-5"])
      expect(ids(await get(readOnly, "instances", { machine: "order", correlationId: hostileId }))).toEqual(["order-6", hostileId])
      expect(ids(await get(readOnly, "instances", { machine: "order", correlationId: "none" }))).toEqual([])
    })

    it("one instance: detail, its state highlighted, its trace and history; hostile text stays data", async () => {
      const { readOnly } = target()
      const shipped = await get(readOnly, "instance", { machine: "order", id: "order-2" })
      expect(shipped.status).toBe(200)
      expect(shipped.body.summary).toMatchObject({ instanceId: "order-2", stateTag: "Shipped", stopped: false })
      expect(shipped.body.diagram).toContain("  class Shipped current\n")
      expect(shipped.body.trace).toContain("sequenceDiagram")
      expect(shipped.body.trace).toContain("PaymentCaptured")
      expect(shipped.body.history.entries.map((e: any) => e.tag)).toEqual(["@created", "Pay", "PaymentCaptured", "Ship"])
      expect(shipped.body.history.entries[1].metadata.source).toBe("user")
      expect(shipped.body.lease).toBeNull()

      const hostile = await get(readOnly, "instance", { machine: "order", id: hostileId })
      expect(hostile.status).toBe(200)
      expect(hostile.headers.get("content-type")).toBe("application/json; charset=utf-8")
      expect(hostile.body.summary.instanceId).toBe(hostileId)
      expect(hostile.body.state.orderId).toBe(hostileOrderId)
      expect(hostile.body.history.entries[0].payload.orderId).toBe(hostileOrderId)
      expect(hostile.body.deadlines.map((d: any) => d.name)).toEqual(["payment"])
      // Mermaid gets the id entity-escaped: no markup or quote as written (and no entity: its ";" is escaped).
      const participant = (hostile.body.trace as string).split("\n").find((line) => line.includes("participant instance"))!
      expect(participant).not.toMatch(/[<>"]|&[a-z]+;/)
      expect(participant).toContain("#60;img")

      const page = await get(readOnly, "history", { machine: "order", id: "order-2", fromSeqNr: "2", limit: "2" })
      expect(page.body.entries.map((e: any) => e.seqNr)).toEqual([2, 3])
      expect(page.body.next).toBe(4)
    })

    it("dead letters with their last error, as text", async () => {
      const { readOnly } = target()
      const letters = await get(readOnly, "dead-letters", { machine: "order" })
      expect(letters.body.timers.map((t: any) => [t.instanceId, t.lastError]).sort()).toEqual(
        [["order-5", "sweeper gave up: boom"], [hostileId, hostileError]].sort()
      )
      expect(letters.body.commands.map((c: any) => [c.instanceId, c.tag])).toEqual([["order-6", "ChargeCard"]])
      expect(letters.body.commands[0].lastError).toContain("card network down")
    })

    it("a bad parameter is a 400 with a message, an unknown machine or instance a 404", async () => {
      const { readOnly } = target()
      expect(refused(await get(readOnly, "instances", { machine: "order", limit: "0" }), 400)).toMatch(/^limit: /)
      expect(refused(await get(readOnly, "instances", { machine: "order", limit: "1.5" }), 400)).toMatch(/^limit: /)
      expect(refused(await get(readOnly, "instances", { machine: "order", limit: "many" }), 400)).toMatch(/^limit: /)
      expect(refused(await get(readOnly, "instances", { machine: "order", olderThan: "<script>" }), 400)).toContain(
        'expected a duration such as "10 minutes", got "<script>"'
      )
      expect(refused(await get(readOnly, "instances", { machine: "order", after: "zzz" }), 400)).toMatch(/^after: /)
      expect(refused(await get(readOnly, "instances", { machine: "order", stopped: "maybe" }), 400)).toMatch(/^stopped: /)
      expect(refused(await get(readOnly, "history", { machine: "order", id: "order-2", fromSeqNr: "-1" }), 400)).toMatch(
        /^fromSeqNr: /
      )
      expect(refused(await get(readOnly, "timers", { machine: "order", within: "soon" }), 400)).toMatch(/^within: /)
      expect(refused(await get(readOnly, "instances", {}), 400)).toMatch(/^machine: /)
      expect(refused(await call(readOnly, "/api/machine?machine=order&machine=other"), 400)).toMatch(/^machine: /)
      expect(refused(await get(readOnly, "instance", { machine: "order", id: "" }), 400)).toMatch(/^id: /)
      expect(refused(await get(readOnly, "instance", { machine: "order", id: "bad\u0000id" }), 400)).toContain("NUL")

      for (const endpoint of ["machine", "instances", "dead-letters", "timers"]) {
        expect(refused(await get(readOnly, endpoint, { machine: "<b>orders</b>" }), 404)).toBe('unknown machine "<b>orders</b>"')
      }
      expect((await get(readOnly, "instance", { machine: "order", id: "order-99" })).body.error).toBe("InstanceNotFound")
      refused(await get(readOnly, "instance", { machine: "order", id: "order-99" }), 404)
      refused(await get(readOnly, "history", { machine: "order", id: `${hostileId}-missing` }), 404)
      refused(await call(readOnly, "/nope"), 404)
    })

    it("the page and its assets come from the server, under a policy without inline scripts", async () => {
      const { readOnly } = target()
      const page = await call(readOnly, "/")
      expect(page.status).toBe(200)
      expect(page.body).toContain('<script src="/mermaid.min.js"></script>')
      expect(page.headers.get("content-security-policy")).toContain("script-src 'self';")
      const script = await call(readOnly, "/ui.js")
      expect(script.body).toContain('securityLevel: "strict"')
      expect(script.body).not.toContain("innerHTML")
      const mermaid = await call(readOnly, "/mermaid.min.js")
      expect(mermaid.status).toBe(200)
      expect(mermaid.headers.get("content-type")).toBe("text/javascript; charset=utf-8")
      expect(mermaid.body.length).toBeGreaterThan(1_000_000)
    })

    it("answers only its own Host (no DNS rebinding)", async () => {
      const { readOnly } = target()
      const status = await new Promise<number>((resolve, reject) => {
        const request = http.request(
          { host: "127.0.0.1", port: readOnly.port, path: "/api/meta", headers: { host: `evil.example:${readOnly.port}` } },
          (response) => {
            response.resume()
            resolve(response.statusCode ?? 0)
          }
        )
        request.on("error", reject)
        request.end()
      })
      expect(status).toBe(403)
      expect(new URL(readOnly.url).hostname).toBe("127.0.0.1")
    })

    it("actions: 403 when read-only or without the token; with both, re-drive and discard work", async () => {
      const { actions, readOnly } = target()
      const timer = { kind: "timer", machine: "order", instanceId: "order-5", name: "payment" }
      expect(refused(await post(readOnly, "redrive", timer, readOnly.token), 403)).toContain("--allow-actions")
      expect(refused(await post(actions, "redrive", timer), 403)).toContain(Ui.tokenHeader)
      expect(refused(await post(actions, "redrive", timer, `${actions.token}x`), 403)).toContain(Ui.tokenHeader)
      expect(refused(await post(actions, "redrive", timer, readOnly.token), 403)).toContain(Ui.tokenHeader)
      expect(refused(await post(actions, "redrive", "{not json", actions.token), 400)).toBe("the request body is not JSON")
      expect(refused(await post(actions, "redrive", { ...timer, kind: "<script>" }, actions.token), 400)).toMatch(/kind/)
      expect(refused(await post(actions, "redrive", { ...timer, machine: "nope" }, actions.token), 404)).toContain("nope")
      expect(refused(await post(actions, "redrive", { ...timer, name: "shipping" }, actions.token), 404)).toContain(
        'no dead-lettered timer "shipping"'
      )
      const before = await get(actions, "dead-letters", { machine: "order" })
      expect(before.body.timers.map((t: any) => t.instanceId)).toContain("order-5")

      const redriven = await post(actions, "redrive", timer, actions.token)
      expect(redriven.status).toBe(200)
      expect(redriven.body).toEqual({ redriven: timer })
      const after = await get(actions, "dead-letters", { machine: "order" })
      expect(after.body.timers.map((t: any) => t.instanceId)).toEqual([hostileId])
      // Due again now, as a live timer.
      const detail = await get(actions, "instance", { machine: "order", id: "order-5" })
      expect(detail.body.timers.map((t: any) => [t.name, t.attempts])).toEqual([["payment", 0]])

      const command = { kind: "command", machine: "order", instanceId: "order-6", seqNr: after.body.commands[0].seqNr, index: after.body.commands[0].index }
      expect((await post(actions, "discard", command, actions.token)).body).toEqual({ discarded: command })
      expect((await get(actions, "dead-letters", { machine: "order" })).body.commands).toEqual([])
      refused(await post(actions, "discard", command, actions.token), 404)
    })
  })
}

describe("effect-fsm ui", () => {
  /** Starts the CLI as a process and reads its start-up lines; the caller kills it. */
  const launch = (args: ReadonlyArray<string>) => {
    const child = spawn(process.execPath, ["--import", "tsx", "src/bin.ts", "ui", ...args], {
      cwd: path.resolve(import.meta.dirname, ".."),
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    const lines = new Promise<string>((resolve, reject) => {
      child.stdout.on("data", (chunk) => {
        stdout += String(chunk)
        if (stdout.includes("\n") && (stdout.includes("read-only") || stdout.includes("#token="))) resolve(stdout)
      })
      child.stderr.on("data", (chunk) => void (stderr += String(chunk)))
      child.on("exit", (code) => reject(new Error(`exited with ${code}: ${stderr}`)))
    })
    const exited = new Promise<unknown>((resolve) => child.on("exit", (code, signal) => resolve(code ?? signal)))
    lines.catch(() => {})
    return { child, lines, exited }
  }

  it("serves the database until interrupted, printing the URL and, with --allow-actions, the token", async () => {
    const filename = path.join(directory, "cli.db")
    fs.copyFileSync(path.join(directory, "orders.db"), filename)
    const run = launch(["--machines", "examples/order.ts", "--db", filename, "--port", "0", "--allow-actions"])
    try {
      const output = await run.lines
      const url = /on (http:\/\/127\.0\.0\.1:\d+\/)/.exec(output)?.[1]
      const token = /token (\S+)\n/.exec(output)?.[1]
      expect(url).toBeDefined()
      expect(token).toBeDefined()
      expect(output).toContain(`open ${url}#token=${token}`)
      const meta = await (await fetch(`${url}api/meta`)).json()
      expect(meta).toEqual({ machines: ["order"], allowActions: true, tokenHeader: Ui.tokenHeader })
      const redrive = await fetch(`${url}api/actions/redrive`, {
        method: "POST",
        headers: { [Ui.tokenHeader]: token!, "content-type": "application/json" },
        body: JSON.stringify({ kind: "timer", machine: "order", instanceId: "order-5", name: "payment" })
      })
      expect(redrive.status).toBe(200)
    } finally {
      run.child.kill("SIGINT")
    }
    // Interrupted, it stops (the server's scope closes with it).
    await run.exited
  }, 60_000)
})

describe("Ui.diagram", () => {
  it("puts the counts on the states and marks the current one", () => {
    const text = Ui.diagram(Order, {
      counts: [{ stateTag: "Paid", stopped: false, count: 12 }, { stateTag: "Refunded", stopped: true, count: 2 }],
      current: "Paid"
    })
    expect(text).toContain('  state "Paid (12)" as Paid\n')
    expect(text).toContain('  state "Refunded (2)" as Refunded\n')
    expect(text).toContain('  state "Pending (0)" as Pending\n')
    expect(text).toContain("  class Paid,Refunded occupied\n")
    expect(text.trimEnd().endsWith("  class Paid current")).toBe(true)
    expect(Ui.diagram(Order)).not.toContain("(0)")
  })
})
