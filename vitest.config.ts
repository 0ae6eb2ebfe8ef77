import { defaultClientConditions, defaultServerConditions } from "vite"
import { defineConfig } from "vitest/config"

// "effect-fsm" and "effect-fsm/<Module>" resolve through package.json
// `exports` (a self-reference) under the "@effect-fsm/source" condition, to
// src/*.ts: tests need no build and never see a stale dist/. Processes the
// tests start inherit the condition through NODE_OPTIONS (test/Package.test.ts
// removes it where it plays a user, whose import must reach dist/).
const source = "@effect-fsm/source"
const nodeOptions = process.env.NODE_OPTIONS ?? ""
if (!nodeOptions.includes(`--conditions=${source}`)) {
  process.env.NODE_OPTIONS = `${nodeOptions} --conditions=${source}`.trim()
}

export default defineConfig({
  resolve: { conditions: [source, ...defaultClientConditions] },
  // Without "module": with it vite picks ESM builds that Node cannot load as
  // they are (@opentelemetry/api's build/esm imports files without extensions).
  ssr: { resolve: { conditions: [source, ...defaultServerConditions.filter((condition) => condition !== "module")] } },
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000
  }
})
