import { Context, Effect, Layer } from "effect"
import { FSMRuntime, SqlEventStore } from "effect-fsm"
import * as Pg from "pg"
import * as inspector from "node:inspector"
import * as fs from "node:fs"
const session = new inspector.Session(); session.connect()
const post = (m: string, p?: any) => new Promise<any>((res, rej) => session.post(m, p, (e, r) => e ? rej(e) : res(r)))
import { freshPgSchema, pgClientLayer } from "./db.js"
import { Order, type OrderState, orderScripts } from "./order-machines.js"

const log: Array<string> = []
const qs: Array<number> = [], qe: Array<number> = [], ss: Array<number> = [], se: Array<number> = []
let tracing = false
const orig = Pg.Client.prototype.query
;(Pg.Client.prototype as any).query = function(this: any, config: any, values: any, cb: any) {
  if (!tracing) return orig.call(this, config, values, cb)
  const t0 = performance.now()
  const text = typeof config === "string" ? config : config.text
  const name = typeof config === "string" ? "" : (config.name ?? "")
  qs.push(t0)
  const wrap = (f: any) => (err: any, res: any) => { qe.push(performance.now()); log.push(`${(performance.now() - t0).toFixed(3)}ms ${name} ${String(text).slice(0, 90).replace(/\s+/g, " ")}`); f(err, res) }
  if (typeof values === "function") return orig.call(this, config, wrap(values))
  return orig.call(this, config, values, cb ? wrap(cb) : cb)
}
Effect.runPromise(Effect.scoped(Effect.gen(function*() {
  const schema = yield* freshPgSchema
  const ctx = yield* Layer.build(FSMRuntime.layer({ machines: [Order] }).pipe(Layer.provide(SqlEventStore.layer()), Layer.provide(pgClientLayer({ schema, maxConnections: 8 }))))
  const runtime = Context.get(ctx, FSMRuntime.FSMRuntime)
  const scripts = orderScripts(1100)
  for (const s of scripts) yield* runtime.create(Order, s.orderId, { ...s.initial, orderId: s.orderId } as OrderState)
  for (const s of scripts.slice(0, 100)) for (const e of s.events) yield* runtime.send(Order, s.orderId, e)
  tracing = true
  yield* Effect.promise(() => post("Profiler.enable").then(() => post("Profiler.setSamplingInterval", { interval: 100 })).then(() => post("Profiler.start")))
  const t0 = performance.now()
  for (const s of scripts.slice(100)) for (const e of s.events) { ss.push(performance.now()); yield* runtime.send(Order, s.orderId, e); se.push(performance.now()) }
  const avg = (f: (i: number) => number) => { let t = 0; for (let i = 0; i < ss.length; i++) t += f(i); return (t / ss.length).toFixed(3) }
  console.log("queries", qs.length, "sends", ss.length)
  console.log("send->query", avg((i) => qs[i]! - ss[i]!), "query", avg((i) => qe[i]! - qs[i]!), "query->end", avg((i) => se[i]! - qe[i]!), "end->next", avg((i) => (ss[i + 1] ?? se[i]!) - se[i]!))
  console.log("per send ms", ((performance.now() - t0) / 3000).toFixed(3))
  tracing = false
  const { profile } = yield* Effect.promise(() => post("Profiler.stop"))
  fs.mkdirSync("/tmp/prof", { recursive: true }); fs.writeFileSync("/tmp/prof/loop.cpuprofile", JSON.stringify(profile))
  console.log(log.slice(-12).join("\n"))
})))
