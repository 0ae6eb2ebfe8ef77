/**
 * A chaos worker process, started by `run.ts` (never by hand): it builds a
 * runtime with durable timeouts on the shared database and, in `load` mode,
 * sends events with unique tokens to the shared instances as fast as it can,
 * reporting each send on stdout only after `send` returned (see the line
 * protocol in `shared.ts`). Failed sends are reported and the loop goes on;
 * a token is never sent twice. In `drain` mode it only runs the sweeper.
 *
 * It exits when its stdin closes (the parent is gone) or on SIGTERM; the
 * parent kills it with SIGKILL at random moments.
 */
import { Cause, Context, Duration, Effect, Exit, Fiber, Layer, Logger, LogLevel, Schedule } from "effect"
import { FSMRuntime } from "effect-fsm"
import {
  instanceId,
  makeChaosMachine,
  makeRandom,
  runtimeLayer,
  userEvents,
  type UserEventTag,
  type WorkerConfig,
  workerEnv
} from "./shared.js"

const raw = process.env[workerEnv]
if (raw === undefined) {
  process.stderr.write(`chaos/worker.ts is started by chaos/run.ts (npm run chaos)\n`)
  process.exit(2)
}
const config = JSON.parse(raw) as WorkerConfig
const machine = makeChaosMachine(config.timerMillis)
const random = makeRandom(config.seed)
const totalWeight = userEvents.reduce((sum, e) => sum + e.weight, 0)

const pickEvent = (): UserEventTag => {
  let r = random.next() * totalWeight
  for (const e of userEvents) {
    if ((r -= e.weight) < 0) return e.tag
  }
  return "Add"
}

// Pipes are synchronous on Linux: a line written here is the parent's even if we are killed next.
const say = (line: string) => process.stdout.write(`${line}\n`)

let sent = 0
const nextToken = () => `w${config.id}-${++sent}`

/** Why a send failed, as one word. */
const failureTag = (cause: Cause.Cause<unknown>): string => {
  const failure = Cause.failureOption(cause)
  if (failure._tag === "Some") {
    const error = failure.value as { readonly _tag?: unknown }
    return typeof error._tag === "string" ? error._tag : "UnknownError"
  }
  if (Cause.isInterruptedOnly(cause)) return "Interrupted"
  return "Defect"
}

const sendLoop = (runtime: FSMRuntime.FSMRuntime["Type"]) =>
  Effect.gen(function*() {
    // Bounded only by the process's life: the parent kills or stops it.
    while (true) {
      const index = random.int(config.instances)
      const token = nextToken()
      const exit = yield* Effect.exit(
        runtime.send(machine, instanceId(index), { _tag: pickEvent(), token }).pipe(
          Effect.timeoutFail({ duration: "30 seconds", onTimeout: () => ({ _tag: "SendTimeout" as const }) })
        )
      )
      if (Exit.isSuccess(exit)) {
        say(`ACK ${index} ${token} ${exit.value.seqNr} ${Date.now()}`)
        continue
      }
      const tag = failureTag(exit.cause)
      say(`ERR ${tag} ${Date.now()}`)
      if (tag === "Defect") say(`DEFECT ${Cause.pretty(exit.cause).replace(/\s+/g, " ").slice(0, 500)}`)
      // SequenceConflict after the runtime's own retries: go on at once; anything else (the database is
      // down, ...): back off a little so a dead database does not turn into a busy loop.
      if (tag !== "SequenceConflict") yield* Effect.sleep(Duration.millis(50 + random.int(150)))
    }
  })

const program = Effect.gen(function*() {
  const context = yield* Layer.build(runtimeLayer(config.target, machine, `w${config.id}`)).pipe(
    // The database may be down (restarting) when a replacement starts: keep trying for a while.
    Effect.tapError((error) => Effect.logWarning("building the runtime failed; retrying", error)),
    Effect.retry(Schedule.spaced("500 millis").pipe(Schedule.intersect(Schedule.recurs(240))))
  )
  const runtime = Context.get(context, FSMRuntime.FSMRuntime)
  say(`READY ${Date.now()}`)
  if (config.mode === "load") {
    yield* Effect.forEach(Array.from({ length: config.concurrency }, (_, i) => i), () => sendLoop(runtime), {
      concurrency: "unbounded",
      discard: true
    })
  }
  return yield* Effect.never
}).pipe(Effect.scoped)

const fiber = Effect.runFork(
  program.pipe(
    Effect.provide(Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger))),
    Logger.withMinimumLogLevel(LogLevel.Warning)
  )
)

const stop = () => {
  Effect.runFork(Fiber.interrupt(fiber))
}
process.once("SIGTERM", stop)
process.stdin.on("end", stop)
process.stdin.on("error", stop)
process.stdin.resume()
// A safety net: no worker outlives an hour, whatever happens to its parent.
setTimeout(() => process.exit(3), 60 * 60 * 1000).unref()

fiber.addObserver((exit) => {
  if (Exit.isFailure(exit) && !Exit.isInterrupted(exit)) {
    process.stderr.write(`worker w${config.id} failed: ${Cause.pretty(exit.cause)}\n`)
    process.exit(1)
  }
  process.exit(0)
})
