// An ilp-plugin-btp (1.5.0) client: connects to a BTP server, sends ILP Prepares built with
// ilp-packet (3.1.3), prints one JSON line per answer, then disconnects.
//
//   node tests/interop/plugin_client.js '{"server": "ws://127.0.0.1:PORT", "token": "...",
//        "packets": [{"destination": "g.x", "amount": "1000", "sharedSecret": "<hex>" | null,
//                     "testPayment": true|false, "expiresInMs": 30000}]}'
//
// Conditions follow paychan's local receiver (connector/services/local.py): a keyed payment
// uses fulfillment = HMAC-SHA256(sharedSecret, data) with 16 random bytes of data; a test
// payment uses the public label as the key. Each line says whether the Fulfill's fulfillment
// hashes to the condition.
'use strict'
const crypto = require('crypto')
const BtpPlugin = require('ilp-plugin-btp')
const IlpPacket = require('ilp-packet')

const TEST_LABEL = Buffer.from('paychan/test-payment/v1')

function build (packet) {
  const nonce = crypto.randomBytes(16)
  const data = packet.sharedSecret ? nonce : Buffer.concat([TEST_LABEL, nonce])
  const key = packet.sharedSecret ? Buffer.from(packet.sharedSecret, 'hex') : TEST_LABEL
  const fulfillment = crypto.createHmac('sha256', key).update(data).digest()
  const condition = crypto.createHash('sha256').update(fulfillment).digest()
  return {
    condition,
    prepare: IlpPacket.serializeIlpPrepare({
      amount: String(packet.amount),
      executionCondition: condition,
      expiresAt: new Date(Date.now() + (packet.expiresInMs || 30000)),
      destination: packet.destination,
      data
    })
  }
}

async function main () {
  const spec = JSON.parse(process.argv[2])
  const plugin = new BtpPlugin({ server: spec.server.replace('ws://', `btp+ws://:${spec.token}@`) })
  await plugin.connect()
  for (const packet of spec.packets) {
    const { condition, prepare } = build(packet)
    const reply = IlpPacket.deserializeIlpPacket(await plugin.sendData(prepare))
    const out = { type: reply.typeString }
    if (reply.type === IlpPacket.Type.TYPE_ILP_FULFILL) {
      const digest = crypto.createHash('sha256').update(reply.data.fulfillment).digest()
      out.fulfillmentMatchesCondition = digest.equals(condition)
    } else {
      out.code = reply.data.code
      out.triggeredBy = reply.data.triggeredBy
      out.message = reply.data.message
    }
    process.stdout.write(JSON.stringify(out) + '\n')
  }
  await plugin.disconnect()
}

main().catch((err) => {
  process.stderr.write((err && err.stack) || String(err))
  process.stderr.write('\n')
  process.exit(1)
})
