// Runs the npm ilp-connector (23.0.2) with ilp-plugin-btp accounts, configured from a JSON
// argument. Prints "READY <json>" on stdout once every account's plugin is connected; exits on
// SIGTERM. Used by tests/interop/ and bench/packets.py.
//
//   node tests/interop/ilp_connector.js '{"ilpAddress": "g.js", "accounts": {...}, "routes": [...]}'
//
// Each account is {"listen": port, "token": t} (ilp-plugin-btp server; the peer dials in) or
// {"connect": "ws://host:port", "token": t} (ilp-plugin-btp client; we dial out), plus optional
// "maxPacketAmount" and "rateLimit" (ilp-connector's token bucket; its default, 10,000 packets
// per second per account, throttles a benchmark with T05). The exchange-rate backend is one-to-one with spread 0 (the default one
// fetches rates from the internet). Route broadcast stays on: with it off, ilp-connector
// silently drops the static routes too.
'use strict'
// ilp-connector logs to stdout; keep stdout for the READY line.
require('ilp-connector/dist/common/log').setOutputStream(process.stderr)
const { createApp } = require('ilp-connector')

async function main () {
  const spec = JSON.parse(process.argv[2])
  const accounts = {}
  for (const [id, account] of Object.entries(spec.accounts)) {
    const options = account.listen !== undefined
      ? { listener: { port: account.listen, secret: account.token } }
      : { server: account.connect.replace('ws://', `btp+ws://:${account.token}@`) }
    accounts[id] = {
      relation: 'peer',
      assetCode: 'M2M',
      assetScale: 9,
      plugin: 'ilp-plugin-btp',
      options,
      ...(account.maxPacketAmount ? { maxPacketAmount: account.maxPacketAmount } : {}),
      ...(account.rateLimit ? { rateLimit: account.rateLimit } : {})
    }
  }
  const connector = createApp({
    env: 'production',
    ilpAddress: spec.ilpAddress,
    backend: 'one-to-one',
    spread: 0,
    store: 'memory',
    accounts,
    routes: spec.routes,
    initialConnectTimeout: spec.initialConnectTimeout || 10000
  })
  await connector.listen()
  process.stdout.write('READY ' + JSON.stringify({ ilpAddress: spec.ilpAddress }) + '\n')
  const stop = async () => {
    await connector.shutdown()
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

main().catch((err) => {
  process.stderr.write((err && err.stack) || String(err))
  process.stderr.write('\n')
  process.exit(1)
})
