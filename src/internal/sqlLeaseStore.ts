/**
 * The `LeaseStore.Backend` on a `SqlClient`, over the lease table that fenced
 * commits (`EventStore.Commit.fence`) read in the same atomic commit.
 *
 * One row per key, `(machine, instance_id)`, kept after a release (owner
 * `NULL`) so the next acquisition continues its token. Every operation is ONE
 * statement, atomic on its own on both databases, so no transaction is
 * needed:
 *
 * - `tryAcquire` is an upsert whose update is guarded by "released or
 *   expired": of many concurrent calls for a key, PostgreSQL lets the first
 *   insert (or update) the row and makes the others wait for it on the key,
 *   then re-check the guard against what it wrote, so they return no row; on
 *   SQLite statements run one at a time under the write lock.
 * - `extend` and `release` update the row only when it still carries the
 *   caller's owner and token (`extend`: and has not expired).
 *
 * Expiry is judged by `dialect.leaseClock`: the database's clock on
 * PostgreSQL, the caller's `now` on SQLite.
 *
 * @internal
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as LeaseStore from "../LeaseStore.js"
import type { Dialect } from "./sqlDialect.js"
import { mapSqlError, type Tables, toNumber } from "./sqlShared.js"

interface LeaseRow {
  readonly owner: string
  readonly token: unknown
  readonly expires_at: unknown
}

const leaseOf = (key: LeaseStore.LeaseKey, rows: ReadonlyArray<LeaseRow>): Option.Option<LeaseStore.Lease> => {
  const row = rows[0]
  return row === undefined ? Option.none() : Option.some({
    machine: key.machine,
    instanceId: key.instanceId,
    owner: String(row.owner),
    token: toNumber(row.token),
    expiresAt: toNumber(row.expires_at)
  })
}

const attributes = (key: LeaseStore.LeaseKey, owner: string) => ({
  attributes: { machine: key.machine, instanceId: key.instanceId, owner }
})

export const makeLeaseBackend = (sql: SqlClient.SqlClient, dialect: Dialect, t: Tables): LeaseStore.Backend => {
  const L = sql(t.leases)
  const keyIs = (key: LeaseStore.LeaseKey) => sql`machine = ${key.machine} AND instance_id = ${key.instanceId}`
  const heldBy = (lease: LeaseStore.Lease) => sql`${keyIs(lease)} AND owner = ${lease.owner} AND token = ${lease.token}`

  const tryAcquire = (key: LeaseStore.LeaseKey, owner: string, ttlMillis: number, now: number) => {
    const clock = dialect.leaseClock(now)
    return sql<LeaseRow>`INSERT INTO ${L} (machine, instance_id, owner, token, expires_at) VALUES (${key.machine}, ${key.instanceId}, ${owner}, 1, ${clock} + ${ttlMillis}) ON CONFLICT (machine, instance_id) DO UPDATE SET owner = excluded.owner, token = ${L}.token + 1, expires_at = excluded.expires_at WHERE ${L}.owner IS NULL OR ${L}.expires_at <= ${clock} RETURNING owner, token, expires_at`
      .pipe(
        Effect.map((rows) => leaseOf(key, rows)),
        mapSqlError("tryAcquire"),
        Effect.withSpan("SqlLeaseStore.tryAcquire", attributes(key, owner))
      )
  }

  const extend = (lease: LeaseStore.Lease, ttlMillis: number, now: number) => {
    const clock = dialect.leaseClock(now)
    return sql<LeaseRow>`UPDATE ${L} SET expires_at = ${clock} + ${ttlMillis} WHERE ${
      heldBy(lease)
    } AND expires_at > ${clock} RETURNING owner, token, expires_at`.pipe(
      Effect.map((rows) => leaseOf(lease, rows)),
      mapSqlError("extend"),
      Effect.withSpan("SqlLeaseStore.extend", attributes(lease, lease.owner))
    )
  }

  const release = (lease: LeaseStore.Lease, now: number) =>
    sql`UPDATE ${L} SET owner = NULL, expires_at = ${dialect.leaseClock(now)} WHERE ${heldBy(lease)} RETURNING token`.pipe(
      Effect.map((rows) => rows.length > 0),
      mapSqlError("release"),
      Effect.withSpan("SqlLeaseStore.release", attributes(lease, lease.owner))
    )

  const get = (key: LeaseStore.LeaseKey, now: number) =>
    sql<LeaseRow>`SELECT owner, token, expires_at FROM ${L} WHERE ${keyIs(key)} AND owner IS NOT NULL AND expires_at > ${
      dialect.leaseClock(now)
    }`.pipe(
      Effect.map((rows) => leaseOf(key, rows)),
      mapSqlError("get")
    )

  return { tryAcquire, extend, release, get }
}
