/**
 * Options shared by the conformance suites.
 *
 * @internal
 */

/**
 * How a suite runs.
 *
 * @since 0.1.0
 */
export interface SuiteOptions {
  /**
   * Skip the whole suite (vitest reports its tests as skipped): `true`, or
   * why, e.g. "PostgreSQL is not reachable". `undefined` or `false` runs it.
   */
  readonly skip?: boolean | string | undefined
}

/** @internal */
export const isSkipped = (options: SuiteOptions): boolean => options.skip !== undefined && options.skip !== false
