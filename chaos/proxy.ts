/**
 * A TCP proxy in front of PostgreSQL that cuts connections the way a
 * network does: at random moments (a Poisson process of `cutsPerSecond`) the
 * next chunk the server sends on any connection is swallowed and both sides
 * are closed. When that chunk is the reply to a commit, the commit has
 * landed but its client only sees "connection terminated": a lost
 * acknowledgement, which the runtime must resolve from the log rather than
 * decide the command again. Listens on 127.0.0.1 only.
 */
import * as net from "node:net"

export interface CutProxy {
  readonly port: number
  /** Connections cut so far. */
  readonly cuts: () => number
  readonly close: () => Promise<void>
}

export const startCutProxy = (options: {
  readonly upstreamPort: number
  readonly cutsPerSecond: number
  readonly random: () => number
}): Promise<CutProxy> =>
  new Promise((resolve, reject) => {
    const sockets = new Set<net.Socket>()
    let cutArmed = false
    let cuts = 0
    let armTimer: NodeJS.Timeout | undefined
    const armNext = () => {
      if (options.cutsPerSecond <= 0) return
      const waitMs = (-Math.log(1 - options.random()) / options.cutsPerSecond) * 1000
      armTimer = setTimeout(() => {
        cutArmed = true
        armNext()
      }, waitMs)
    }
    const server = net.createServer((client) => {
      const upstream = net.connect({ host: "127.0.0.1", port: options.upstreamPort })
      sockets.add(client)
      sockets.add(upstream)
      const closeBoth = () => {
        client.destroy()
        upstream.destroy()
        sockets.delete(client)
        sockets.delete(upstream)
      }
      client.on("error", closeBoth)
      upstream.on("error", closeBoth)
      client.on("close", closeBoth)
      upstream.on("close", closeBoth)
      client.on("data", (chunk) => upstream.write(chunk))
      upstream.on("data", (chunk) => {
        if (cutArmed) {
          cutArmed = false
          cuts++
          closeBoth()
          return
        }
        client.write(chunk)
      })
    })
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      armNext()
      const address = server.address() as net.AddressInfo
      resolve({
        port: address.port,
        cuts: () => cuts,
        close: () =>
          new Promise<void>((done) => {
            clearTimeout(armTimer)
            for (const socket of sockets) socket.destroy()
            server.close(() => done())
          })
      })
    })
  })
