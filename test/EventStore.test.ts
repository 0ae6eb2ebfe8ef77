/**
 * The EventStore, TimeoutStore and OutboxStore conformance suites of the
 * testkit (`effect-fsm/testing`), run against memory, SQLite and PostgreSQL
 * alike. The suites themselves live in src/testing/conformance/.
 */
import { Conformance } from "effect-fsm/testing"
import { allBackends } from "./utils/backends.js"

for (const backend of allBackends) {
  Conformance.eventStoreSuite(backend.name, backend.layer(), { skip: backend.skip })
  Conformance.timeoutStoreSuite(backend.name, backend.layer(), { skip: backend.skip })
  Conformance.outboxStoreSuite(backend.name, backend.layer(), { skip: backend.skip })
}
