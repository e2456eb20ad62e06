// For tests/han_ota/test_hub_alerts_parser.py: runs Smart DCC's gbcs-parser (its built dist/index.js, argv[2]) on one message.
// Reads {"hex": ..., "keys": {"EUI": "PEM"}} on stdin; prints the parser's minimized JSON.
const { createPublicKey } = require('node:crypto')
const parser = require(process.argv[2])
let input = ''
process.stdin.on('data', (d) => (input += d))
process.stdin.on('end', async () => {
  const req = JSON.parse(input)
  const lookup = async (eui, type, options) => {
    const id = (typeof eui === 'string' ? eui : Buffer.from(eui).toString('hex')).replace(/[^0-9a-fA-F]/g, '').toUpperCase()
    const pem = req.keys[id]
    if (!pem || type !== 'DS' || options.privateKey) throw new Error(`no ${type} key for ${id}`)
    return createPublicKey(pem)
  }
  const parsed = await parser.parseGbcsMessage(req.hex, lookup)
  process.stdout.write(JSON.stringify(parser.minimizeMessage(parsed)))
})
