/** The bounded cache map of the runtime and the SQLite client (src/internal/lru.ts). */
import { describe, expect, it } from "@effect/vitest"
import { Lru } from "../src/internal/lru.js"

describe("Lru", () => {
  it("holds at most its capacity, dropping the least recently used entry first (a hit or a set counts as a use, has does not)", () => {
    const evicted: Array<string> = []
    const lru = new Lru<string, number>(3, (key) => evicted.push(key))
    lru.set("a", 1)
    lru.set("b", 2)
    lru.set("c", 3)
    expect(lru.get("a")).toBe(1)
    expect(lru.has("b")).toBe(true)
    lru.set("d", 4)
    // a was used after b and c: b, the least recently used, goes.
    expect(evicted).toEqual(["b"])
    expect([...lru.keys()].sort()).toEqual(["a", "c", "d"])
    lru.set("e", 5)
    expect(evicted).toEqual(["b", "c"])
    // Then c; and a, unused since, before d and e.
    lru.set("f", 6)
    expect(evicted).toEqual(["b", "c", "a"])
    expect(lru.size).toBe(3)
    expect(lru.get("a")).toBeUndefined()
  })

  it("never drops the entry being added, even at capacity 1; replacing a value keeps the entry; delete and clear are not evictions", () => {
    const evicted: Array<string> = []
    const one = new Lru<string, number>(1, (key) => evicted.push(key))
    one.set("a", 1)
    expect(one.get("a")).toBe(1)
    one.set("b", 2)
    expect(evicted).toEqual(["a"])
    expect(one.get("b")).toBe(2)
    const lru = new Lru<string, number>(2, (key) => evicted.push(key))
    lru.set("x", 1)
    lru.set("y", 2)
    lru.get("x")
    lru.get("y")
    lru.set("z", 3)
    expect(lru.get("z")).toBe(3)
    expect(lru.size).toBe(2)
    // Replacing a value keeps the entry (and makes it the most recently used).
    lru.set("z", 4)
    expect(lru.get("z")).toBe(4)
    expect(lru.has("nothing")).toBe(false)
    const before = evicted.length
    lru.delete("z")
    lru.clear()
    expect(evicted.length).toBe(before)
    expect(lru.size).toBe(0)
  })
})
