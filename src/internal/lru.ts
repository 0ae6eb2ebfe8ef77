/** A bounded least-recently-used map, on `Map`'s insertion order. */
export class Lru<K, V> {
  private readonly map = new Map<K, V>()
  /** `onEvict` hears of every entry dropped to make room (not of `delete` or `clear`). */
  constructor(readonly capacity: number, private readonly onEvict?: (key: K) => void) {}

  get(key: K): V | undefined {
    const value = this.map.get(key)
    if (value !== undefined) {
      this.map.delete(key)
      this.map.set(key, value)
    }
    return value
  }

  /** Whether `key` is there, without making it recently used. */
  has(key: K): boolean {
    return this.map.has(key)
  }

  set(key: K, value: V): void {
    this.map.delete(key)
    this.map.set(key, value)
    if (this.map.size > this.capacity) {
      const oldest = this.map.keys().next()
      if (!oldest.done) {
        this.map.delete(oldest.value)
        this.onEvict?.(oldest.value)
      }
    }
  }

  delete(key: K): void {
    this.map.delete(key)
  }

  clear(): void {
    this.map.clear()
  }

  keys(): IterableIterator<K> {
    return this.map.keys()
  }

  get size(): number {
    return this.map.size
  }
}
