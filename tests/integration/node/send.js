#!/usr/bin/env node
'use strict'

/*
 * Sends messages to ngx_cdp's Segment-compatible API with Segment's own
 * node SDK (@segment/analytics-node, pinned in package.json), unchanged
 * but for its settings: host and path, and flushAt / flushInterval /
 * maxRetries so that a test does not wait.
 *
 *   node send.js --host http://127.0.0.1:PORT --write-key KEY \
 *       [--path /v1/batch] [--messages FILE.json] [--flush-at N] \
 *       [--flush-interval MS] [--max-retries N] [--timeout MS] \
 *       [--requests]
 *
 * The messages are a JSON array (from FILE, else stdin) of objects
 * {"type": "identify" | "track" | "page" | "screen" | "group" | "alias",
 * ...the SDK call's own parameters}, e.g.
 *
 *   [{"type": "identify", "userId": "u1", "traits": {"email": "a@b.c"}},
 *    {"type": "track", "userId": "u1", "event": "Signed Up",
 *     "properties": {"plan": "pro"}}]
 *
 * Prints one JSON line: {"calls": N, "requests": N, "errors": [...]} (with
 * --requests, "sent": the requests themselves: url, headers, body parsed)
 * and exits 0, or 1 when the SDK emitted any 'error' (delivery failures:
 * the reason is "[STATUS] Status Text" for an HTTP error, after the SDK's
 * retries of anything but 400), or 2 on bad arguments or input.
 *
 * What SDK 2.2.1 sends (observed with a local listener, node 20):
 *
 *   POST {host}{path}                one request per flushAt messages
 *   Content-Type: application/json
 *   User-Agent: analytics-node-next/latest
 *
 * and no Authorization header: the write key is in the body ("writeKey");
 * only oauthSettings add "Authorization: Bearer ...".  (1.x sent Basic
 * auth.)  The body, keys in the SDK's order:
 *
 *   {"batch": [
 *      {"timestamp": "2026-11-23T07:14:58.379Z", "integrations": {},
 *       "type": "identify", "userId": "u1",
 *       "traits": {"email": "Ann@Example.com", ...},
 *       "context": {"library": {"name": "@segment/analytics-node",
 *                               "version": "2.2.1"}},
 *       "messageId": "node-next-1795418098379-<uuid v4>",
 *       "_metadata": {"nodeVersion": "v20.20.2", "jsRuntime": "node"}},
 *      ...],
 *    "writeKey": "KEY",
 *    "sentAt": "2026-11-23T07:14:58.384Z"}
 *
 * Every message has timestamp (the SDK's clock, ms, "Z", unless the call
 * gave one), integrations ({} unless given), type, context.library,
 * messageId and _metadata; then the call's own fields: event and
 * properties (track), name, category and properties, with category also
 * copied into properties (page), name and properties ({} when none,
 * screen), groupId and traits (group), previousId (alias).  No
 * originalTimestamp, no per-message sentAt.  The SDK retries anything but
 * a 400 (maxRetries times, 25 ms to 1 s apart) and reports the failure as
 * "[STATUS] Status Text", never the response body.
 */

const fs = require('fs')
const { Analytics } = require('@segment/analytics-node')

const USAGE = `usage: node send.js --host URL --write-key KEY [--path PATH]
       [--messages FILE] [--flush-at N] [--flush-interval MS]
       [--max-retries N] [--timeout MS] [--requests]

Sends a JSON array of {"type": ..., ...params} messages (from FILE, or
stdin) with @segment/analytics-node, then prints a JSON summary:
{"calls": N, "requests": N, "errors": [...]}.  Exit status 0 when every
message was delivered, 1 when the SDK reported an error, 2 on bad input.

  --host URL          e.g. http://127.0.0.1:8080 (required)
  --write-key KEY     the source's write key (required)
  --path PATH         default /v1/batch
  --messages FILE     default: read stdin
  --flush-at N        messages per request, default 15 (the SDK's)
  --flush-interval MS default 10
  --max-retries N     default 3 (the SDK's)
  --timeout MS        how long to wait for delivery, default 30000
  --requests          add the requests sent ("sent") to the summary
`

const METHODS = ['identify', 'track', 'page', 'screen', 'group', 'alias']

function fail(msg) {
  process.stderr.write(`send.js: ${msg}\n\n${USAGE}`)
  process.exit(2)
}

function parseArgs(argv) {
  const opts = { path: '/v1/batch', flushInterval: 10, timeout: 30000,
                 requests: false }
  const valued = {
    '--host': 'host',
    '--path': 'path',
    '--write-key': 'writeKey',
    '--messages': 'messages',
    '--flush-at': 'flushAt',
    '--flush-interval': 'flushInterval',
    '--max-retries': 'maxRetries',
    '--timeout': 'timeout',
  }
  const numeric = ['flushAt', 'flushInterval', 'maxRetries', 'timeout']

  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]

    if (a === '--help' || a === '-h') {
      process.stdout.write(USAGE)
      process.exit(0)
    }

    if (a === '--requests') {
      opts.requests = true
      continue
    }

    const key = valued[a]
    if (!key) {
      fail(`unknown argument ${a}`)
    }

    if (i + 1 >= argv.length) {
      fail(`${a} needs a value`)
    }

    let v = argv[++i]

    if (numeric.includes(key)) {
      v = Number(v)
      if (!Number.isInteger(v) || v < 0) {
        fail(`${a} needs a non-negative integer`)
      }
    }

    opts[key] = v
  }

  if (!opts.host) {
    fail('--host is required')
  }

  if (!opts.writeKey) {
    fail('--write-key is required')
  }

  return opts
}

function readMessages(file) {
  let text
  try {
    text = fs.readFileSync(file === undefined ? 0 : file, 'utf8')
  } catch (e) {
    fail(`cannot read ${file === undefined ? 'stdin' : file}: ${e.message}`)
  }

  let msgs
  try {
    msgs = JSON.parse(text)
  } catch (e) {
    fail(`the messages are not JSON: ${e.message}`)
  }

  if (!Array.isArray(msgs)) {
    fail('the messages must be a JSON array')
  }

  msgs.forEach((m, i) => {
    if (m === null || typeof m !== 'object' || !METHODS.includes(m.type)) {
      fail(`message ${i} needs a type among ${METHODS.join(', ')}`)
    }
  })

  return msgs
}

function describe(reason) {
  if (reason instanceof Error) {
    return reason.message
  }

  return typeof reason === 'string' ? reason : JSON.stringify(reason)
}

async function main() {
  const opts = parseArgs(process.argv.slice(2))
  const msgs = readMessages(opts.messages)

  const settings = {
    writeKey: opts.writeKey,
    host: opts.host,
    path: opts.path,
    flushInterval: opts.flushInterval,
  }

  if (opts.flushAt !== undefined) {
    settings.flushAt = opts.flushAt
  }

  if (opts.maxRetries !== undefined) {
    settings.maxRetries = opts.maxRetries
  }

  const analytics = new Analytics(settings)
  const errors = []
  const sent = []

  analytics.on('error', (err) => {
    const e = { code: err.code, reason: describe(err.reason) }
    const event = err.ctx && err.ctx.event

    if (event) {
      e.type = event.type
      e.messageId = event.messageId
    }

    errors.push(e)
  })

  analytics.on('http_request', (req) => {
    let body = req.body
    try {
      body = JSON.parse(req.body)
    } catch (e) {
      /* kept as text */
    }

    sent.push({ url: req.url, method: req.method, headers: req.headers,
                body: body })
  })

  for (const m of msgs) {
    const { type, ...params } = m
    try {
      analytics[type](params)
    } catch (e) {
      /* the SDK validates before queueing (e.g. no userId) */
      errors.push({ code: 'validation', type: type, reason: describe(e) })
    }
  }

  /*
   * closeAndFlush() gives up after flushInterval * 1.25 by default (12.5 ms
   * here) and resolves as if all was sent: wait for real, and count what
   * is still pending then as an error.
   */
  await analytics.closeAndFlush({ timeout: opts.timeout })

  if (analytics._pendingEvents) {
    errors.push({ code: 'timeout', reason: `${analytics._pendingEvents} `
                  + `message(s) still pending after ${opts.timeout} ms` })
  }

  const summary = { calls: msgs.length, requests: sent.length, errors }
  if (opts.requests) {
    summary.sent = sent
  }

  process.stdout.write(JSON.stringify(summary) + '\n')
  process.exit(errors.length ? 1 : 0)
}

main().catch((e) => {
  process.stderr.write(`send.js: ${e && e.stack ? e.stack : e}\n`)
  process.exit(2)
})
