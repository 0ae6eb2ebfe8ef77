/**
 * The web inspector in a real browser: Debian's Chromium (/usr/bin/chromium,
 * installed by .ci/run when missing) driven by playwright-core, never a
 * downloaded browser. One launch, one page, against the order example's
 * SQLite file (test/utils/uiData.ts) served with --allow-actions: the
 * machine diagram with its per-state counts, one instance's highlighted
 * state and trace, a hostile instance whose markup shows as text and runs
 * nothing, and a re-drive confirmed in the page. Every request the page
 * makes goes to the inspector itself (anything else is aborted and fails
 * the test). Screenshots land in a temporary folder, printed at the end.
 */
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { type BrowserContext, chromium } from "playwright-core"
import type * as Ui from "effect-fsm/Ui"
import { hostileError, hostileId, hostileOrderId, makeData, serve } from "./utils/uiData.js"

const chromiumPath = "/usr/bin/chromium"
const haveChromium = fs.existsSync(chromiumPath)
const ci = process.env.CI === "true"
if (!haveChromium && !ci) {
  console.warn(
    `\n${"!".repeat(78)}\n!! ${chromiumPath} is missing: the browser test of the web inspector is SKIPPED.\n` +
      `!! Install it with \`apt-get install -y chromium\` (.ci/run does); with CI=true it fails instead.\n${"!".repeat(78)}\n`
  )
}

const scope = Effect.runSync(Scope.make())
let directory = ""
let server: Ui.Server
let browser: BrowserContext | undefined

beforeAll(async () => {
  directory = fs.mkdtempSync(path.join(os.tmpdir(), "effect-fsm-ui-browser-"))
  const filename = path.join(directory, "orders.db")
  await Effect.runPromise(makeData(filename))
  server = await Effect.runPromise(Scope.extend(serve({ db: filename }, { allowActions: true }), scope))
}, 120_000)

afterAll(async () => {
  await browser?.close()
  await Effect.runPromise(Scope.close(scope, Exit.void))
})

describe.skipIf(!haveChromium && !ci)("the web inspector in Chromium", () => {
  it("draws the diagram with counts, an instance's trace, hostile data as text, and re-drives a dead letter", async () => {
    expect(haveChromium, `${chromiumPath} is missing (.ci/run installs Debian's chromium)`).toBe(true)
    const profile = fs.mkdtempSync(path.join(directory, "profile-"))
    const shots = fs.mkdtempSync(path.join(os.tmpdir(), "effect-fsm-ui-screenshots-"))
    // A fresh profile (playwright passes it as --user-data-dir).
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: chromiumPath,
      headless: true,
      viewport: { width: 1280, height: 1000 },
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync"
      ]
    })
    const page = await browser.newPage()
    const pageErrors: Array<string> = []
    const foreign: Array<string> = []
    page.on("pageerror", (error) => pageErrors.push(error.message))
    page.on("dialog", (dialog) => void dialog.accept())
    const origin = new URL(server.url).origin
    await page.route("**/*", (route) => {
      const url = route.request().url()
      if (url.startsWith(origin) || url.startsWith("data:")) return route.continue()
      foreign.push(url)
      return route.abort()
    })

    // Machines: the diagram, with the live count of each state on it.
    await page.goto(`${server.url}#token=${server.token}`)
    const machine = page.locator('section[data-machine="order"] [data-diagram="machine"] svg')
    await machine.waitFor()
    const labels = await machine.textContent()
    for (const label of ["Pending (3)", "Charging (1)", "Paid (0)", "Shipped (1)", "Delivered (1)", "Cancelled (1)"]) {
      expect(labels).toContain(label)
    }
    await expect(page.locator('section[data-machine="order"]').textContent()).resolves.toContain("Timers due in the next hour")
    await page.screenshot({ path: path.join(shots, "machines.png"), fullPage: true })

    // Instances: by state, paged, "in this state longer than", and the form.
    await page.goto(`${server.url}#/instances?machine=order&state=Pending`)
    const rows = page.locator('section[data-view="instances"] tbody tr')
    await page.locator('section[data-view="instances"] tbody').waitFor()
    expect((await rows.allTextContents()).every((row) => row.includes("Pending"))).toBe(true)
    expect(await rows.count()).toBe(3)
    // Two at a time: the next page link carries the cursor.
    await page.goto(`${server.url}#/instances?machine=order&limit=2`)
    await page.locator("a[data-next]").waitFor()
    const idCells = page.locator('section[data-view="instances"] tbody tr td:first-child')
    const firstPage = await idCells.allTextContents()
    expect(firstPage).toHaveLength(2)
    await page.locator("a[data-next]").click()
    await idCells.filter({ hasText: firstPage[0]! }).waitFor({ state: "detached" })
    await idCells.nth(1).waitFor()
    const secondPage = await idCells.allTextContents()
    expect(secondPage).toHaveLength(2)
    expect(secondPage.filter((id) => firstPage.includes(id))).toEqual([])
    await page.goto(`${server.url}#/instances?machine=order&state=Pending`)
    await page.locator('section[data-view="instances"] input[name="state"][value="Pending"]').waitFor()
    await page.locator('section[data-view="instances"] input[name="state"]').fill("")
    await page.locator('section[data-view="instances"] input[name="olderThan"]').fill("1 hour")
    await page.locator('section[data-view="instances"] button[type="submit"]').click()
    await page.locator('section[data-view="instances"]').filter({ hasText: "no instances match" }).waitFor()
    await page.goto(`${server.url}#/instances?machine=order&state=Pending&olderThan=abc`)
    await expect(page.locator("[data-error]").textContent()).resolves.toContain('expected a duration such as "10 minutes"')
    await page.screenshot({ path: path.join(shots, "instances.png"), fullPage: true })

    // One instance: its state highlighted, its path as a trace.
    await page.goto(`${server.url}#/instance?machine=order&id=order-2`)
    const trace = page.locator('[data-diagram="trace"] svg')
    await trace.waitFor()
    expect(await trace.textContent()).toContain("PaymentCaptured")
    await expect(page.locator('[data-diagram="current"] svg g.current').textContent()).resolves.toContain("Shipped")
    await page.screenshot({ path: path.join(shots, "instance.png"), fullPage: true })

    // A hostile instance: its id, payload and error are text, and nothing ran.
    await page.goto(`${server.url}#/instance?machine=order&id=${encodeURIComponent(hostileId)}`)
    await page.locator("[data-instance-id]").filter({ hasText: hostileId }).waitFor()
    await page.locator('[data-diagram="trace"] svg').waitFor()
    expect(await page.locator("[data-instance-id]").textContent()).toBe(hostileId)
    expect(await page.locator("[data-history]").textContent()).toContain(JSON.stringify(hostileOrderId))
    await page.screenshot({ path: path.join(shots, "hostile.png"), fullPage: true })

    // Dead letters: the last error as text; re-drive order-5's timer, confirmed in the page.
    await page.goto(`${server.url}#/dead-letters?machine=order`)
    const row = page.locator("tr", { hasText: "order-5" })
    await row.waitFor()
    expect(await page.locator('section[data-view="dead-letters"]').textContent()).toContain(hostileError)
    await row.locator('button[data-action="redrive"]').click()
    await page.locator('[data-status][data-done="redrive"]').waitFor()
    await page.screenshot({ path: path.join(shots, "dead-letters.png"), fullPage: true })
    const letters = await (await fetch(`${server.url}api/dead-letters?machine=order`)).json() as {
      timers: ReadonlyArray<{ instanceId: string }>
    }
    expect(letters.timers.map((t) => t.instanceId)).toEqual([hostileId])

    expect(await page.evaluate("typeof window.__pwned")).toBe("undefined")
    expect(await page.locator("img").count()).toBe(0)
    expect(pageErrors).toEqual([])
    expect(foreign).toEqual([])
    for (const shot of ["machines", "instances", "instance", "hostile", "dead-letters"]) {
      expect(fs.statSync(path.join(shots, `${shot}.png`)).size).toBeGreaterThan(1000)
    }
    console.log(`web inspector screenshots: ${shots}`)
  }, 60_000)
})
