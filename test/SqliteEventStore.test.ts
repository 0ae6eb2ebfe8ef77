/** The embedded default: `SqliteEventStore.layerRuntime`, a runtime from nothing but a SQLite filename. */
import { describe, expect, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { Context, Effect, Layer, Ref, TestClock } from "effect"
import { FSMRuntime } from "effect-fsm"
import * as SqliteEventStore from "effect-fsm/SqliteEventStore"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { ActionLog, Order } from "./fixtures/machines.js"
import { eventually } from "./utils/eventually.js"

describe("SqliteEventStore.layerRuntime", () => {
  it.scoped("keeps instances and their durable timeouts across a restart on the same file", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(0)
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fsm-layer-sqlite-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const filename = path.join(dir, "orders.db")
      const node = SqliteEventStore.layerRuntime({ machines: [Order], filename, timeouts: { maxIdleInterval: "1 hour" } }).pipe(
        Layer.provide(Layer.effect(ActionLog, Ref.make<ReadonlyArray<string>>([])))
      )
      yield* Effect.scoped(Effect.gen(function*() {
        const context = yield* Layer.build(node)
        const orders = yield* Effect.provide(FSMRuntime.client(Order), context)
        yield* orders.create("paid", { _tag: "Pending", orderId: "paid" })
        yield* orders.send("paid", { _tag: "Pay", amount: 3 })
        yield* orders.create("unpaid", { _tag: "Pending", orderId: "unpaid" })
      }))
      expect(fs.existsSync(filename)).toBe(true)
      const context = yield* Layer.build(node)
      const orders = yield* Effect.provide(FSMRuntime.client(Order), context)
      expect(yield* orders.state("paid")).toEqual({ _tag: "Paid", orderId: "paid", amount: 3 })
      yield* TestClock.adjust("5 minutes")
      const cancelled = yield* eventually(
        Effect.filterOrFail(orders.state("unpaid"), (s) => s._tag === "Cancelled", () => "pending")
      )
      expect(cancelled).toEqual({ _tag: "Cancelled", orderId: "unpaid", reason: "unpaid" })
    }))
})

describe("SqliteEventStore.layerClient journal", () => {
  it.scoped("switches a file to WAL by default; wal: false leaves its journal mode as it is", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "fsm-journal-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const modeOf = (filename: string, wal?: boolean) =>
        Effect.scoped(Effect.gen(function*() {
          const context = yield* Layer.build(SqliteEventStore.layerClient({ filename, wal }))
          const rows = yield* Context.get(context, SqlClient.SqlClient)<{ readonly journal_mode: string }>`PRAGMA journal_mode`
          return rows[0]?.journal_mode
        }))
      expect(yield* modeOf(path.join(dir, "kept.db"), false)).toBe("delete")
      expect(yield* modeOf(path.join(dir, "kept.db"), false)).toBe("delete")
      expect(yield* modeOf(path.join(dir, "wal.db"))).toBe("wal")
      expect(yield* modeOf(path.join(dir, "wal.db"), false)).toBe("wal") // the file keeps what it was set to
    }))
})

describe("SqliteEventStore options", () => {
  it.effect("an unusable busyTimeout is InvalidConfiguration when the layer builds, never a throw", () =>
    Effect.gen(function*() {
      for (const busyTimeout of ["5 secs", "soon"] as const) {
        const error = yield* Effect.flip(
          Effect.scoped(Layer.build(SqliteEventStore.layer({ filename: ":memory:", busyTimeout: busyTimeout as never })))
        )
        expect(error).toMatchObject({ _tag: "InvalidConfiguration", option: "busyTimeout" })
      }
    }))
})
