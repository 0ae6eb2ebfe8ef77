/**
 * `jsonProblem` / `stringProblem`: which values every backend stores and
 * returns exactly. Examples first, then properties against an independent
 * oracle (a JSON round trip compared strictly, plus `encodeURIComponent` for
 * well-formed strings).
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { jsonProblem, maxJsonDepth, stringProblem } from "../src/internal/jsonValue.js"

const nested = (levels: number): unknown => {
  let value: unknown = 1
  for (let i = 0; i < levels; i++) value = i % 2 === 0 ? [value] : { next: value }
  return value
}

/** The explanation `jsonProblem` appends to some reasons. */
const reasonTail = (leaf: unknown, within: "root" | "array" | "object"): string =>
  leaf === undefined
    ? within === "root" ? "" : within === "array" ? " (JSON writes null)" : " (JSON drops the property)"
    : leaf instanceof Date
    ? " (encode it, e.g. as an ISO string or epoch milliseconds)"
    : typeof leaf === "bigint"
    ? " (encode it as a string)"
    : ""

// --- the oracle --------------------------------------------------------------

const wellFormedWithoutNul = (s: string): boolean => {
  try {
    encodeURIComponent(s) // throws URIError on a lone surrogate
    return !s.includes("\u0000")
  } catch {
    return false
  }
}

/** `parsed` (from JSON) equals `original` exactly: same kinds, plain containers, no holes; `-0` equals `0`. */
const exactlyEqual = (original: unknown, parsed: unknown): boolean => {
  if (typeof original === "string") return original === parsed && wellFormedWithoutNul(original)
  if (typeof original === "number" || typeof original === "boolean" || original === null) return original === parsed
  if (typeof original !== "object") return false
  if (Array.isArray(original)) {
    if (Object.getPrototypeOf(original) !== Array.prototype) return false
    if (!Array.isArray(parsed) || parsed.length !== original.length) return false
    for (let i = 0; i < original.length; i++) {
      if (!(i in original) || !exactlyEqual(original[i], parsed[i])) return false
    }
    return true
  }
  const prototype: unknown = Object.getPrototypeOf(original)
  if (prototype !== Object.prototype && prototype !== null) return false
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return false
  const keys = Object.keys(original)
  if (keys.length !== Object.keys(parsed).length) return false
  return keys.every((key) =>
    wellFormedWithoutNul(key) && Object.prototype.hasOwnProperty.call(parsed, key) &&
    exactlyEqual((original as Record<string, unknown>)[key], (parsed as Record<string, unknown>)[key])
  )
}

const storesExactly = (value: unknown): boolean => {
  let text: string | undefined
  try {
    text = JSON.stringify(value)
  } catch {
    return false
  }
  return text !== undefined && exactlyEqual(value, JSON.parse(text))
}

// --- examples ----------------------------------------------------------------

describe("jsonProblem", () => {
  it("accepts JSON values, including -0 (written as 0, which compares equal), shared references and null prototypes", () => {
    const shared = { sku: "a" }
    const bare = Object.assign(Object.create(null) as Record<string, unknown>, { a: 1, b: [true, null] })
    const accepted: ReadonlyArray<unknown> = [
      null,
      true,
      false,
      0,
      -0,
      1.5,
      -1e308,
      Number.MAX_SAFE_INTEGER,
      "",
      "🔗 ünïcödé \u2028 \uFFFD \uDBFF\uDFFF",
      [],
      {},
      { "": "empty key", "clé 🔑": ["x"], __proto__x: 1 },
      [shared, shared, { again: shared }],
      bare,
      JSON.parse("{\"__proto__\": {\"own\": true}}"),
      nested(maxJsonDepth)
    ]
    for (const value of accepted) expect(jsonProblem(value), JSON.stringify(value)?.slice(0, 60)).toBeUndefined()
  })

  it("names the path of the problem", () => {
    expect(jsonProblem({ items: [0, 1, 2, { price: Number.NaN }] })).toBe("at $.items[3].price: NaN is not a JSON number")
    expect(jsonProblem({ "a b": { "k\"": [Number.POSITIVE_INFINITY] } })).toBe(
      "at $[\"a b\"][\"k\\\"\"][0]: Infinity is not a JSON number"
    )
    expect(jsonProblem(Number.NEGATIVE_INFINITY, "payload")).toBe("at payload: -Infinity is not a JSON number")
    expect(jsonProblem({ note: "ab\u0000" }, "state")).toBe("at state.note: string contains NUL (U+0000) at index 2")
    expect(jsonProblem(["ok", "x\uD800"])).toBe("at $[1]: string contains a lone surrogate (U+D800) at index 1")
    expect(jsonProblem({ ["k\uDBFF"]: 1 })).toBe("at $: key \"k\\udbff\" contains a lone surrogate (U+DBFF) at index 1")
    expect(jsonProblem({ nested: { ["\u0000"]: 1 } })).toBe("at $.nested: key \"\\u0000\" contains NUL (U+0000) at index 0")
    expect(jsonProblem({ a: undefined })).toBe("at $.a: undefined is not a JSON value (JSON drops the property)")
    expect(jsonProblem([1, undefined])).toBe("at $[1]: undefined is not a JSON value (JSON writes null)")
    // eslint-disable-next-line no-sparse-arrays
    expect(jsonProblem([1, , 3])).toBe("at $[1]: a hole in an array (JSON writes null)")
    expect(jsonProblem(undefined)).toBe("at $: undefined is not a JSON value")
  })

  it("refuses what is not a plain JSON value", () => {
    class Money {
      amount = 1
    }
    class Items extends Array<number> {}
    const refused: ReadonlyArray<readonly [unknown, string]> = [
      [{ at: new Date(0) }, "at $.at: a Date is not a JSON value"],
      [new Map([["a", 1]]), "at $: a Map is not a JSON value"],
      [new Set([1]), "at $: a Set is not a JSON value"],
      [new Money(), "at $: an instance of Money is not a JSON value"],
      [Items.from([1]), "at $: an instance of Items is not a JSON value"],
      [new Uint8Array(2), "at $: an instance of Uint8Array is not a JSON value"],
      [{ n: Object(1) }, "at $.n: an instance of Number is not a JSON value"],
      [Object.create({ inherited: 1 }), "at $: an object with a custom prototype is not a JSON value"],
      [{ amount: BigInt(1) }, "at $.amount: a bigint is not a JSON value"],
      [[Symbol("s")], "at $[0]: a symbol is not a JSON value"],
      [{ toJSON: () => "x" }, "at $.toJSON: a function is not a JSON value"]
    ]
    for (const [value, reason] of refused) expect(jsonProblem(value)).toContain(reason)
  })

  it("finds cycles, and refuses nesting deeper than maxJsonDepth without overflowing the stack", () => {
    const cycle: Record<string, unknown> = { a: { b: [1] } }
    ;((cycle["a"] as Record<string, unknown>)["b"] as Array<unknown>).push(cycle["a"])
    expect(jsonProblem(cycle)).toBe("at $.a.b[1]: a cycle (the value contains itself, at $.a)")
    const self: Array<unknown> = []
    self.push(self)
    expect(jsonProblem(self)).toBe("at $[0]: a cycle (the value contains itself, at $)")

    expect(jsonProblem(nested(maxJsonDepth + 1))).toMatch(/nested deeper than 1000 levels$/)
    let veryDeep: unknown = []
    for (let i = 0; i < 200_000; i++) veryDeep = [veryDeep]
    const problem = jsonProblem(veryDeep)
    expect(problem).toMatch(/^at \$\[0\]\[0\].*…\(980 more\)….*: nested deeper than 1000 levels$/)
    expect(problem!.length).toBeLessThan(200)
  })

  it("never throws: throwing getters, Proxy traps and revoked Proxies are reported", () => {
    const boom = () => {
      throw new Error("boom")
    }
    const revocable = Proxy.revocable({}, {})
    revocable.revoke()
    const hostile: ReadonlyArray<unknown> = [
      { get price() {
        return boom()
      } },
      new Proxy({}, { ownKeys: boom }),
      new Proxy({}, { getPrototypeOf: boom }),
      new Proxy({ a: 1 }, { get: boom }),
      new Proxy([1, 2], { get: boom }),
      { inner: revocable.proxy },
      // A thrown value that cannot even be printed.
      new Proxy({}, {
        ownKeys: () => {
          throw { toString: boom }
        }
      })
    ]
    for (const value of hostile) {
      let problem: string | undefined
      expect(() => problem = jsonProblem(value)).not.toThrow()
      expect(problem).toMatch(/^at \$(\.inner)?: reading the value threw /)
    }
  })

  it("handles a 5 MiB payload", () => {
    const items = Array.from({ length: 20_000 }, (_, i) => ({ sku: `sku-${i}`, price: i / 8, tags: ["a", "😀"] }))
    const big = { items, blob: "ab€😀\"\\\n".repeat(600_000) }
    expect(JSON.stringify(big).length).toBeGreaterThan(5 * 1024 * 1024)
    expect(jsonProblem(big)).toBeUndefined()
    ;(big.items[19_999] as { price: number }).price = Number.NaN
    expect(jsonProblem(big)).toBe("at $.items[19999].price: NaN is not a JSON number")
  })
})

describe("stringProblem", () => {
  it("accepts well-formed strings and refuses NUL and lone surrogates, with their index", () => {
    for (const fine of ["", "a", "🔗", "\uD800\uDC00", "\uDBFF\uDFFF", "\uFFFD", "\uFFFF", "x🔗y"]) {
      expect(stringProblem(fine), fine).toBeUndefined()
    }
    expect(stringProblem("nul\u0000")).toBe("contains NUL (U+0000) at index 3")
    expect(stringProblem("s\uD800")).toBe("contains a lone surrogate (U+D800) at index 1")
    expect(stringProblem("s\uDBFFx")).toBe("contains a lone surrogate (U+DBFF) at index 1")
    expect(stringProblem("\uDC00x")).toBe("contains a lone surrogate (U+DC00) at index 0")
    expect(stringProblem("🔗\uDC00\uD800")).toBe("contains a lone surrogate (U+DC00) at index 2")
  })
})

// --- properties --------------------------------------------------------------

/** Strings mixing ordinary text with the code units that matter: NUL, lone and paired surrogates. */
const trickyString = fc.string({
  unit: fc.oneof(
    { weight: 6, arbitrary: fc.constantFrom("a", "ü", " ", "\"", "\\") },
    { weight: 1, arbitrary: fc.constantFrom("\u0000", "\uD800", "\uDBFF", "\uDC00", "\uDFFF", "😀", "\uFFFD") }
  ),
  maxLength: 6
})

const anything = fc.anything({
  key: fc.oneof(fc.string({ maxLength: 4 }), trickyString),
  values: [
    fc.boolean(),
    fc.integer(),
    fc.double(), // NaN, ±Infinity, -0
    fc.string({ maxLength: 6 }),
    trickyString,
    fc.constantFrom(null, undefined)
  ],
  withBigInt: true,
  withBoxedValues: true,
  withDate: true,
  withMap: true,
  withSet: true,
  withNullPrototype: true,
  withObjectString: true,
  withSparseArray: true,
  withTypedArray: true
})

describe("jsonProblem, as properties", () => {
  it("for JSON values: undefined iff JSON.parse(JSON.stringify(v)) equals v exactly (-0 equal to 0)", () => {
    for (const arbitrary of [fc.jsonValue(), fc.jsonValue({ stringUnit: "grapheme" }), fc.jsonValue({ stringUnit: "binary" })]) {
      fc.assert(
        fc.property(arbitrary, (value) => {
          expect(jsonProblem(value) === undefined).toBe(storesExactly(value))
        }),
        { numRuns: 200 }
      )
    }
  })

  it("for anything: never throws, and undefined iff the value round-trips exactly", () => {
    fc.assert(
      fc.property(anything, (value) => {
        let problem: string | undefined
        expect(() => problem = jsonProblem(value)).not.toThrow()
        expect(problem === undefined ? "stored exactly" : problem).toBe(storesExactly(value) ? "stored exactly" : problem)
      }),
      { numRuns: 1_000 }
    )
  })

  it("one bad leaf put anywhere in a JSON value is found, at its path", () => {
    const badLeaves: ReadonlyArray<readonly [unknown, string]> = [
      [Number.NaN, "NaN is not a JSON number"],
      [Number.POSITIVE_INFINITY, "Infinity is not a JSON number"],
      [Number.NEGATIVE_INFINITY, "-Infinity is not a JSON number"],
      [undefined, "undefined is not a JSON value"],
      ["a\u0000", "string contains NUL (U+0000) at index 1"],
      ["x\uD800", "string contains a lone surrogate (U+D800) at index 1"],
      ["\uDFFF", "string contains a lone surrogate (U+DFFF) at index 0"],
      [new Date(0), "a Date is not a JSON value"],
      [BigInt(7), "a bigint is not a JSON value"],
      [() => 1, "a function is not a JSON value"],
      [new Map(), "a Map is not a JSON value"]
    ]
    const segment = (key: string | number) =>
      typeof key === "number" ? `[${key}]` : /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`
    fc.assert(
      fc.property(
        fc.jsonValue({ maxDepth: 4, stringUnit: "grapheme" }),
        fc.constantFrom(...badLeaves),
        fc.array(fc.nat(), { maxLength: 6 }),
        (valid, [leaf, reason], choices) => {
          // Walk down by `choices`, then replace one element or property with the bad leaf.
          const root: Array<unknown> = [valid]
          let container: Array<unknown> | Record<string, unknown> = root
          let key: string | number = 0
          const path: Array<string | number> = []
          for (const choice of choices) {
            const child: unknown = (container as Record<string | number, unknown>)[key]
            if (typeof child !== "object" || child === null) break
            const keys: ReadonlyArray<string | number> = Array.isArray(child)
              ? child.map((_, i) => i)
              : Object.keys(child)
            if (keys.length === 0) break
            path.push(key)
            container = child as Array<unknown> | Record<string, unknown>
            key = keys[choice % keys.length]!
          }
          path.push(key)
          Object.defineProperty(container, key, { value: leaf, enumerable: true, writable: true, configurable: true })
          const where = "$" + path.slice(1).map(segment).join("")
          expect(jsonProblem(root[0])).toBe(`at ${where}: ${reason}${
            reasonTail(leaf, path.length === 1 ? "root" : Array.isArray(container) ? "array" : "object")
          }`)
          expect(storesExactly(root[0])).toBe(false)
        }
      ),
      { numRuns: 500 }
    )
  })

  it("a value with a problem reports a path that starts at the root", () => {
    fc.assert(
      fc.property(anything, (value) => {
        const problem = jsonProblem(value, "payload")
        if (problem !== undefined) expect(problem).toMatch(/^at payload(\.|\[|:)/)
      }),
      { numRuns: 300 }
    )
  })
})
