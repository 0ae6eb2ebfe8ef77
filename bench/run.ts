/**
 * The benchmark runner behind `npm run bench`, and the small harness every
 * bench script shares (flags, warm-up, interleaved repetitions, medians and
 * the `BENCH` line format of /work/shared/BENCH.md).
 *
 *   npm run bench                          every script, common flags only
 *   npm run bench -- step                  one script
 *   npm run bench -- send-memory --orders 2000 --reps 7
 *   npm run bench -- --list
 *   npm run bench -- step --help           a script's flags
 *
 * `npm run bench` builds the package first and runs the scripts under
 * `bench/tsconfig.json`, so they measure the compiled `dist/`, as an
 * application runs it. Each script runs in a child process of its own, so
 * one benchmark's heap and JIT state do not leak into the next. Progress
 * goes to stderr; the `BENCH` lines, and nothing else, to stdout.
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import { parseArgs } from "node:util"
import * as v8 from "node:v8"
import * as vm from "node:vm"

// ---------------------------------------------------------------------------
// The table of scripts: add a line here to make a new script part of `npm run bench`.
// ---------------------------------------------------------------------------

export interface Script {
  /** What `npm run bench -- <name>` selects. */
  readonly name: string
  /** Path relative to `bench/`. */
  readonly file: string
  readonly summary: string
}

export const scripts: ReadonlyArray<Script> = [
  { name: "step", file: "step.ts", summary: "pure transitions/s: Machine.step vs XState transition()" },
  {
    name: "send-memory",
    file: "send-memory.ts",
    summary: "durable send/s through FSMRuntime + EventStore.layerMemory vs XState actor.send"
  },
  {
    name: "durable-send",
    file: "durable-send.ts",
    summary: "durable send/s on SQLite and PostgreSQL at 1/8/64 instances vs raw single-row commits (and pgbench)"
  },
  {
    name: "timeouts",
    file: "timeouts.ts",
    summary: "durable timers fired/s (1 and 3 sweepers) and lateness p50/p99 on PostgreSQL and SQLite"
  },
  {
    name: "contention",
    file: "contention.ts",
    summary: "PostgreSQL, 2 processes: hot instance x 8 writers (optimistic, distributed, sticky) and 64 routed instances vs 1 writer"
  },
  {
    name: "recover",
    file: "recover.ts",
    summary: "recovery of one 100k-event instance on SQLite and PostgreSQL: snapshot + tail (ms) and full replay (events/s)"
  },
  {
    name: "memory",
    file: "memory.ts",
    summary: "peak RSS and send/s with 1,000,000 vs 10,000 instances in one SQLite file (cacheSize 10,000, durable timers)"
  },
  {
    name: "outbox",
    file: "outbox.ts",
    summary: "outbox commands dispatched/s (1 and 2 dispatchers) and commit-to-handler latency p50/p99 on PostgreSQL and SQLite"
  },
  {
    name: "queries",
    file: "queries.ts",
    summary: "current-state table with 1,000,000 instances: state page (oldest first, 100) and counts per state p50/p99 vs a point lookup"
  }
]

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

/** A flag of a script: a positive integer with a default. */
export interface FlagSpec {
  readonly default: number
  readonly description: string
}

/** Flags every script takes; `npm run bench` without a name passes only these. */
export const commonFlags = {
  reps: { default: 5, description: "measured repetitions per side (median reported, at least 3)" },
  warmup: { default: 2, description: "unmeasured repetitions per side before measuring" }
} satisfies Record<string, FlagSpec>

/**
 * Says which build of effect-fsm a script measures, and refuses a stale one.
 * `npm run bench` builds `dist/` and runs under `bench/tsconfig.json`, so
 * `effect-fsm` resolves, as in an application, to the compiled package. Run
 * with the repository's tsconfig (`npx tsx bench/<name>.ts`), it resolves to
 * `src/` through tsx's transform, whose wrappers (esbuild's `keepNames`
 * names every closure the hot path creates) make the runtime measurably
 * slower than what users run: that is allowed, and said.
 */
const checkBuild = (script: string): void => {
  const entry = fileURLToPath(import.meta.resolve("effect-fsm"))
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
  if (entry.startsWith(path.join(root, "src") + path.sep)) {
    progress(`${script}: effect-fsm resolves to src/ through tsx's transform, slower than the built package; \`npm run bench\` measures dist/`)
    return
  }
  const built = fs.statSync(entry).mtimeMs
  const sources = fs.readdirSync(path.join(root, "src"), { recursive: true, encoding: "utf8" })
  const newer = sources.find((file) => file.endsWith(".ts") && fs.statSync(path.join(root, "src", file)).mtimeMs > built)
  if (newer !== undefined) {
    progress(`${script}: dist/ is older than src/${newer}: run \`npm run build\` (or \`npm run bench\`, which builds first)`)
    process.exit(2)
  }
}

/**
 * Parses `--name value` flags against `spec` (plus `--help`). Unknown flags
 * and values that are not positive integers are errors, so a typo never
 * silently runs the defaults.
 */
export const parseFlags = <K extends string>(
  script: string,
  args: ReadonlyArray<string>,
  spec: Record<K, FlagSpec>
): Record<K, number> => {
  checkBuild(script)
  const entries = Object.entries(spec) as Array<[K, FlagSpec]>
  const usage = () =>
    [`usage: npm run bench -- ${script} [flags]`, ...entries.map(([k, s]) => `  --${k} <n>  ${s.description} (default ${s.default})`)]
      .join("\n")
  let parsed: ReturnType<typeof parseArgs>
  try {
    parsed = parseArgs({
      args: [...args],
      strict: true,
      allowPositionals: false,
      options: {
        help: { type: "boolean" },
        ...Object.fromEntries(entries.map(([k]) => [k, { type: "string" as const }]))
      }
    })
  } catch (error) {
    process.stderr.write(`${script}: ${(error as Error).message}\n${usage()}\n`)
    process.exit(2)
  }
  if (parsed.values["help"] === true) {
    process.stderr.write(`${usage()}\n`)
    process.exit(0)
  }
  const out = {} as Record<K, number>
  for (const [k, s] of entries) {
    const raw = parsed.values[k]
    const value = typeof raw === "string" ? Number(raw.replaceAll("_", "")) : s.default
    if (!Number.isInteger(value) || value < 1) {
      process.stderr.write(`${script}: --${k} must be a positive integer, got ${String(raw)}\n`)
      process.exit(2)
    }
    out[k] = value
  }
  return out
}

/** Progress and diagnostics: stderr only, so stdout carries just the BENCH lines. */
export const progress = (message: string): void => {
  process.stderr.write(`${message}\n`)
}

/** True when the module at `moduleUrl` is the script node was started with. */
export const isMain = (moduleUrl: string): boolean =>
  process.argv[1] !== undefined && moduleUrl === pathToFileURL(path.resolve(process.argv[1])).href

// A full collection before each sample, so that neither side pays for the
// garbage the other left behind. `--expose-gc` is switched on at run time so
// that `npx tsx bench/<name>.ts` needs no node flags.
v8.setFlagsFromString("--expose-gc")
const gc = vm.runInNewContext("gc") as () => void

/** One timed run: `ops` operations in `ms` milliseconds. */
export interface Sample {
  readonly ops: number
  readonly ms: number
}

export type Sampler = () => Sample | Promise<Sample>

export const median = (xs: ReadonlyArray<number>): number => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** The nearest-rank percentile `p` (0-100) of numbers sorted ascending. */
export const percentile = (sorted: ReadonlyArray<number>, p: number): number =>
  sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!

const fmt = (n: number): string =>
  n === 0 ? "0" : Math.abs(n) >= 100 ? String(Math.round(n)) : String(Number(n.toPrecision(3)))

/**
 * Runs every sampler in turn, `warmup` unmeasured rounds then `reps`
 * measured ones, rotating which goes first each round so that none always
 * runs on a warmer or colder heap, and returns each one's median throughput
 * in operations per second.
 */
export const measureThroughput = async <K extends string>(options: {
  readonly label: string
  readonly reps: number
  readonly warmup: number
  readonly samplers: Record<K, Sampler>
}): Promise<Record<K, number>> => {
  const reps = Math.max(3, options.reps)
  const names = Object.keys(options.samplers) as Array<K>
  const rates = new Map<K, Array<number>>(names.map((k) => [k, []]))
  for (let i = 0; i < options.warmup + reps; i++) {
    const measured = i >= options.warmup
    const round = measured ? `rep ${i - options.warmup + 1}/${reps}` : `warmup ${i + 1}/${options.warmup}`
    for (let j = 0; j < names.length; j++) {
      const name = names[(i + j) % names.length]!
      gc()
      const sample = await options.samplers[name]()
      const rate = sample.ops / (sample.ms / 1000)
      progress(`  ${options.label} ${round} ${name}: ${sample.ops} ops in ${sample.ms.toFixed(1)} ms = ${fmt(rate)} ops/s`)
      if (measured) rates.get(name)!.push(rate)
    }
  }
  return Object.fromEntries(names.map((k) => [k, median(rates.get(k)!)])) as Record<K, number>
}

/**
 * Prints one figure in the shape of BENCH.md. The ratio is value/baseline
 * for throughputs and baseline/value for latencies (`lowerIsBetter`), so
 * above 1 is always better; without a baseline it prints `baseline=0 ratio=0`.
 */
export const printBench = (
  name: string,
  figure: { readonly value: number; readonly unit: string; readonly baseline?: number; readonly lowerIsBetter?: boolean }
): void => {
  const baseline = figure.baseline ?? 0
  const ratio = baseline === 0 || figure.value === 0
    ? 0
    : figure.lowerIsBetter === true
    ? baseline / figure.value
    : figure.value / baseline
  process.stdout.write(
    `BENCH ${name} value=${fmt(figure.value)} unit=${figure.unit} baseline=${fmt(baseline)} ratio=${
      ratio === 0 ? "0" : ratio.toFixed(2)
    }\n`
  )
}

// ---------------------------------------------------------------------------
// The runner
// ---------------------------------------------------------------------------

const runAll = (args: ReadonlyArray<string>): number => {
  if (args.includes("--list")) {
    for (const s of scripts) process.stdout.write(`${s.name.padEnd(16)} ${s.summary}\n`)
    return 0
  }
  // Leading words name scripts; everything from the first flag on is passed to each of them.
  const firstFlag = args.findIndex((a) => a.startsWith("-"))
  const names = firstFlag === -1 ? args : args.slice(0, firstFlag)
  const flags = firstFlag === -1 ? [] : args.slice(firstFlag)
  const unknown = names.filter((n) => !scripts.some((s) => s.name === n))
  if (unknown.length > 0) {
    progress(`unknown bench script(s): ${unknown.join(", ")}; known: ${scripts.map((s) => s.name).join(", ")}`)
    return 2
  }
  const selected = names.length === 0 ? scripts : scripts.filter((s) => names.includes(s.name))
  const dir = path.dirname(fileURLToPath(import.meta.url))
  let failed = 0
  for (const script of selected) {
    progress(`== ${script.name}: ${script.summary}`)
    // `process.execArgv` carries tsx's loader, so the child runs TypeScript too.
    const child = spawnSync(process.execPath, [...process.execArgv, path.join(dir, script.file), ...flags], {
      stdio: "inherit"
    })
    if (child.status !== 0) {
      failed++
      progress(`== ${script.name} failed (${child.signal ?? `exit ${child.status}`})`)
    }
  }
  return failed === 0 ? 0 : 1
}

if (isMain(import.meta.url)) process.exitCode = runAll(process.argv.slice(2))

/**
 * Prints `<prefix>_p50` and `<prefix>_p99` (ms), each the median over the
 * repetitions, against a latency target (ratio = target / value). Clock
 * times are whole milliseconds: a latency under 1 ms is printed as 1 ms, so
 * the ratio stays finite.
 */
export const printLatencies = (
  prefix: string,
  samples: { readonly p50: ReadonlyArray<number>; readonly p99: ReadonlyArray<number> },
  targetMs: number
): void => {
  for (const suffix of ["p50", "p99"] as const) {
    printBench(`${prefix}_${suffix}`, {
      value: Math.max(1, median(samples[suffix])),
      unit: "ms",
      baseline: targetMs,
      lowerIsBetter: true
    })
  }
}
