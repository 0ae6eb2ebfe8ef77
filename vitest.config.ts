import * as path from "node:path"
import { defineConfig } from "vitest/config"

const src = path.resolve(import.meta.dirname, "src")

export default defineConfig({
  resolve: {
    // As package.json `exports` maps them: "effect-fsm" is src/index.ts and
    // "effect-fsm/<Module>" is src/<Module>.ts (the driver modules are reached
    // only this way). A string alias would also rewrite every subpath
    // ("effect-fsm/X" → "src/index.ts/X"), hence the anchored patterns.
    alias: [
      { find: /^effect-fsm$/, replacement: path.join(src, "index.ts") },
      { find: /^effect-fsm\/([^/]+)$/, replacement: path.join(src, "$1.ts") }
    ]
  },
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000
  }
})
