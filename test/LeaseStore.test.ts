/**
 * The LeaseStore conformance suite of the testkit (`effect-fsm/testing`),
 * with the fencing of commits it enables, run against memory, SQLite and
 * PostgreSQL alike. The suite itself lives in
 * src/testing/conformance/LeaseStoreSuite.ts.
 */
import { Conformance } from "effect-fsm/testing"
import { allBackends } from "./utils/backends.js"

for (const backend of allBackends) {
  Conformance.leaseStoreSuite(backend.name, backend.layer(), { skip: backend.skip })
}
