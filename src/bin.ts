#!/usr/bin/env node
/**
 * The `effect-fsm` executable: `Cli.main` on Node, with the process's
 * arguments. A failure has been printed already (one line on stderr), so
 * the runtime only sets the exit code.
 *
 * @since 0.1.0
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as Cli from "./Cli.js"

Cli.main(process.argv).pipe(
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain({ disableErrorReporting: true })
)
