import { Context, Effect, Layer } from "effect"
import * as SqlClient from "@effect/sql/SqlClient"
import { makeDialect } from "../src/internal/sqlDialect.js"
import { tables } from "../src/internal/sqlShared.js"
import { currentChange } from "../src/internal/currentState.js"
import { SqlEventStore } from "../src/index.js"
import { freshPgSchema, pgClientLayer, runScript } from "./db.js"

const N = Number(process.env["N"] ?? 32)
await runScript(Effect.scoped(Effect.gen(function*() {
  const schema = yield* freshPgSchema
  const ctx = yield* Layer.build(SqlEventStore.layer().pipe(Layer.provideMerge(pgClientLayer({ schema, maxConnections: 4 }))))
  const sql = Context.get(ctx, SqlClient.SqlClient)
  const dialect = yield* makeDialect(sql, tables("fsm_"))
  const mk = (i: number, round: number) => {
    const commit = { machine: "m", instanceId: `i${i}`, expectedSeqNr: round, events: [{ tag: "E", payload: {}, stateTag: round % 2 ? "A" : "B", schemaVersion: 1, metadata: { timestamp: 1000 + round, source: "user" as const, correlationId: null, node: "n", commitId: "c", timer: null } }] }
    return { current: currentChange(commit), machine: "m", instanceId: `i${i}`, expectedSeqNr: round, events: [{ seqNr: round + 1, tag: "E", payload: "{}", stateTag: round % 2 ? "A" : "B", schemaVersion: 1, timestamp: 1000 + round, source: "user", correlationId: null, node: "n", commitId: "c", timer: null }], snapshot: undefined, fired: undefined, cancelAll: false, schedule: [], fence: undefined, produce: [], complete: undefined }
  }
  for (let round = 0; round < 60; round++) {
    const commits = Array.from({ length: N }, (_, i) => mk(i, round))
    const t0 = performance.now()
    const compiled = (sql as any).unsafe ? 0 : 0
    void compiled
    yield* dialect.appendGroup(commits)
    const t1 = performance.now()
    if (round % 10 === 9) console.log(`round ${round}: ${(t1 - t0).toFixed(2)} ms for ${N}`)
  }
})))
