#!/usr/bin/env node
// Node amqplib interop scenarios for amqpbroker, driven by interop/test_amqplib.py.
//
//   node scenario.js <amqp-url> <scenario> <name-prefix>
//
// Prints exactly one JSON line on stdout: the scenario's observations on success, or
// {"error": ...} (exit code 1) on failure. The Python test asserts on that JSON.
'use strict';

const crypto = require('node:crypto');
const amqp = require('amqplib');

const [url, scenario, prefix] = process.argv.slice(2);
if (!url || !scenario || !prefix) {
  console.error('usage: node scenario.js <amqp-url> <scenario> <name-prefix>');
  process.exit(2);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(pred, ms = 10000) {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error('timed out waiting for condition');
    await sleep(10);
  }
}

function errInfo(err) {
  return { code: err && err.code, message: err && err.message, classId: err && err.classId,
           methodId: err && err.methodId };
}

function msgInfo(m) {
  const p = m.properties;
  return {
    body: m.content.toString('utf8'),
    fields: {
      deliveryTag: m.fields.deliveryTag, redelivered: m.fields.redelivered,
      exchange: m.fields.exchange, routingKey: m.fields.routingKey,
      messageCount: m.fields.messageCount,
    },
    properties: {
      contentType: p.contentType, contentEncoding: p.contentEncoding, headers: p.headers,
      deliveryMode: p.deliveryMode, priority: p.priority, correlationId: p.correlationId,
      replyTo: p.replyTo, expiration: p.expiration, messageId: p.messageId,
      timestamp: p.timestamp, type: p.type, appId: p.appId,
    },
  };
}

const scenarios = {
  // connect, assertQueue, sendToQueue, get, consume, ack, cancel, deleteQueue
  async basic(conn) {
    const out = { serverProperties: conn.connection.serverProperties };
    const ch = await conn.createChannel();
    const q = `${prefix}-basic`;
    out.assertQueue = await ch.assertQueue(q, { durable: false, autoDelete: false });
    ch.sendToQueue(q, Buffer.from('first'), {
      contentType: 'text/plain', contentEncoding: 'utf8',
      headers: { str: 'v', int: 42, neg: -5, big: 1099511627776, bool: true, nested: { a: 'b' },
                 list: [1, 'x'] },
      persistent: true, priority: 4, correlationId: 'corr', replyTo: 'rq', expiration: '60000',
      messageId: 'mid', timestamp: 1700000000, type: 'ty', appId: 'node',
    });
    ch.sendToQueue(q, Buffer.from('second'));
    ch.sendToQueue(q, Buffer.from('third'));
    let m = false;
    for (let i = 0; i < 200 && m === false; i++) {
      m = await ch.get(q, { noAck: false });
      if (m === false) await sleep(10);
    }
    if (m === false) throw new Error('basic.get returned empty');
    out.get = msgInfo(m);
    ch.ack(m);
    const deliveries = [];
    const ok = await ch.consume(q, (msg) => {
      deliveries.push(msgInfo(msg));
      ch.ack(msg);
    });
    out.consumerTag = ok.consumerTag;
    await waitFor(() => deliveries.length >= 2);
    out.deliveries = deliveries;
    out.cancel = await ch.cancel(ok.consumerTag);
    out.getEmpty = await ch.get(q);
    out.checkQueue = await ch.checkQueue(q);
    out.deleteQueue = await ch.deleteQueue(q);
    const named = await ch.assertQueue('', { exclusive: true });
    out.serverNamed = named.queue;
    await ch.close();
    return out;
  },

  // confirm channel: publish with callbacks, waitForConfirms, mandatory unroutable return
  async confirm(conn) {
    const out = {};
    const ch = await conn.createConfirmChannel();
    const q = `${prefix}-confirm`;
    await ch.assertQueue(q, { autoDelete: true });
    const acked = [];
    for (let i = 0; i < 20; i++) {
      ch.sendToQueue(q, Buffer.from(`m${i}`), {}, (err) => acked.push(err ? 'nack' : i));
    }
    await ch.waitForConfirms();
    out.acked = acked;
    const events = [];
    ch.on('return', (msg) => events.push({
      event: 'return', replyCode: msg.fields.replyCode, replyText: msg.fields.replyText,
      exchange: msg.fields.exchange, routingKey: msg.fields.routingKey,
      body: msg.content.toString(),
    }));
    const missing = `${prefix}-nowhere`;
    ch.publish('', missing, Buffer.from('bounce'), { mandatory: true },
      (err) => events.push({ event: err ? 'nack' : 'ack' }));
    ch.publish('', missing, Buffer.from('dropped'), {},
      (err) => events.push({ event: err ? 'nack2' : 'ack2' }));
    await ch.waitForConfirms();
    out.events = events;
    out.checkQueue = await ch.checkQueue(q);
    await ch.close();
    return out;
  },

  // topic exchange routing with several binding patterns
  async topic(conn) {
    const ch = await conn.createConfirmChannel();
    const ex = `${prefix}-topic`;
    await ch.assertExchange(ex, 'topic', { durable: false, autoDelete: true });
    const patterns = {
      star: ['*.orange.*'],
      hash: ['lazy.#'],
      multi: ['*.*.rabbit', 'lazy.#'],
      all: ['#'],
      exact: ['quick.orange.rabbit'],
    };
    const queues = {};
    for (const [name, pats] of Object.entries(patterns)) {
      const { queue } = await ch.assertQueue(`${prefix}-${name}`, { autoDelete: true });
      for (const p of pats) await ch.bindQueue(queue, ex, p);
      queues[name] = queue;
    }
    const keys = ['quick.orange.rabbit', 'lazy.orange.elephant', 'quick.orange.fox',
                  'lazy.brown.fox', 'lazy.pink.rabbit', 'quick.brown.fox', 'orange',
                  'quick.orange.male.rabbit', 'lazy.orange.male.rabbit', 'lazy', ''];
    for (const k of keys) ch.publish(ex, k, Buffer.from(k));
    await ch.waitForConfirms();
    const out = { keys, received: {} };
    for (const [name, queue] of Object.entries(queues)) {
      const got = [];
      for (;;) {
        const m = await ch.get(queue, { noAck: true });
        if (m === false) break;
        got.push(m.fields.routingKey);
      }
      out.received[name] = got;
    }
    await ch.unbindQueue(queues.all, ex, '#');
    ch.publish(ex, 'after.unbind', Buffer.from('x'));
    await ch.waitForConfirms();
    out.afterUnbind = await ch.get(queues.all, { noAck: true });
    await ch.close();
    return out;
  },

  // a channel error (404) closes only that channel; the connection stays usable
  async errors(conn) {
    const out = {};
    let connError = null;
    conn.on('error', (e) => { connError = errInfo(e); });
    const ch = await conn.createChannel();
    const chErrors = [];
    ch.on('error', (e) => chErrors.push(errInfo(e)));
    let closed = false;
    ch.on('close', () => { closed = true; });
    try {
      await ch.checkQueue(`${prefix}-missing`);
      out.checkQueue = 'no error';
    } catch (e) {
      out.checkQueue = errInfo(e);
    }
    await waitFor(() => closed);
    out.channelErrors = chErrors;
    const ch2 = await conn.createChannel();
    const q = await ch2.assertQueue(`${prefix}-after`, { autoDelete: true });
    ch2.sendToQueue(q.queue, Buffer.from('ok'));
    let m = false;
    for (let i = 0; i < 200 && m === false; i++) {
      m = await ch2.get(q.queue, { noAck: true });
      if (m === false) await sleep(10);
    }
    out.afterError = m === false ? null : m.content.toString();
    // unknown delivery tag -> 406 on this channel only
    const ch3 = await conn.createChannel();
    const ch3Errors = [];
    ch3.on('error', (e) => ch3Errors.push(errInfo(e)));
    let ch3closed = false;
    ch3.on('close', () => { ch3closed = true; });
    ch3.ack({ fields: { deliveryTag: 99 } });
    await waitFor(() => ch3closed);
    out.unknownTag = ch3Errors;
    out.connError = connError;
    await ch2.deleteQueue(q.queue);
    await ch2.close();
    return out;
  },

  // prefetch: only N unacked deliveries outstanding per consumer
  async prefetch(conn) {
    const ch = await conn.createConfirmChannel();
    const q = `${prefix}-prefetch`;
    await ch.assertQueue(q, { autoDelete: true });
    for (let i = 0; i < 5; i++) ch.sendToQueue(q, Buffer.from(String(i)));
    await ch.waitForConfirms();
    await ch.prefetch(2);
    const got = [];
    await ch.consume(q, (m) => got.push(m));
    await waitFor(() => got.length >= 2);
    await sleep(400);
    const out = { firstWindow: got.map((m) => m.content.toString()) };
    ch.ack(got[0]);
    await waitFor(() => got.length >= 3);
    await sleep(300);
    out.afterOneAck = got.map((m) => m.content.toString());
    ch.ackAll();
    await waitFor(() => got.length >= 5);
    ch.ackAll();
    out.all = got.map((m) => m.content.toString());
    out.redelivered = got.map((m) => m.fields.redelivered);
    await ch.close();
    return out;
  },

  // 1 MiB and multi-frame bodies round trip intact
  async large(conn) {
    const ch = await conn.createConfirmChannel();
    const q = `${prefix}-large`;
    await ch.assertQueue(q, { autoDelete: true });
    const sizes = [0, 1, 131063, 131064, 131065, 1048576, 3 * 1048576 + 7];
    const sent = sizes.map((n) => crypto.randomBytes(n));
    for (const b of sent) ch.sendToQueue(q, b);
    await ch.waitForConfirms();
    const got = [];
    await ch.consume(q, (m) => got.push(m.content), { noAck: true });
    await waitFor(() => got.length >= sizes.length, 30000);
    const digest = (b) => crypto.createHash('sha256').update(b).digest('hex');
    await ch.close();
    return { sizes, receivedSizes: got.map((b) => b.length),
             match: got.map((b, i) => digest(b) === digest(sent[i])) };
  },

  // exchange-to-exchange bindings, and a server-sent basic.cancel when the queue goes away
  async e2e(conn) {
    const ch = await conn.createConfirmChannel();
    const src = `${prefix}-src`;
    const dst = `${prefix}-dst`;
    // src is not auto-delete: unbinding its only binding would delete it
    await ch.assertExchange(src, 'direct', { autoDelete: false });
    await ch.assertExchange(dst, 'fanout', { autoDelete: true });
    const { queue } = await ch.assertQueue(`${prefix}-e2eq`, { autoDelete: false });
    await ch.bindQueue(queue, dst, '');
    await ch.bindExchange(dst, src, 'k');
    ch.publish(src, 'k', Buffer.from('via-e2e'));
    ch.publish(src, 'other', Buffer.from('dropped'));
    await ch.waitForConfirms();
    await ch.unbindExchange(dst, src, 'k');
    ch.publish(src, 'k', Buffer.from('after-unbind'));
    await ch.waitForConfirms();
    const bodies = [];
    let cancelled = false;
    const ok = await ch.consume(queue, (m) => {
      if (m === null) { cancelled = true; return; }
      bodies.push([m.fields.exchange, m.fields.routingKey, m.content.toString()]);
    }, { noAck: true });
    await waitFor(() => bodies.length >= 1);
    await sleep(200);
    const other = await conn.createChannel();
    await other.deleteQueue(queue);
    await waitFor(() => cancelled);
    await other.deleteExchange(src);
    await other.close();
    await ch.close();
    return { consumerTag: ok.consumerTag, bodies, cancelled };
  },

  // heartbeat=1: the connection survives an idle period on heartbeats alone
  async heartbeat(conn) {
    let closed = null;
    conn.on('close', (e) => { closed = String(e); });
    await sleep(4000);
    const ch = await conn.createChannel();
    const q = await ch.assertQueue('', { exclusive: true });
    await ch.close();
    return { heartbeat: conn.connection.heartbeat, closed, queue: q.queue };
  },
};

async function main() {
  const fn = scenarios[scenario];
  if (!fn) throw new Error(`unknown scenario ${scenario}`);
  // amqps: the CA (and a client certificate) from the environment, host names checked
  const tls = {};
  if (process.env.AMQP_TLS_CA) tls.ca = [require('node:fs').readFileSync(process.env.AMQP_TLS_CA)];
  if (process.env.AMQP_TLS_CERT) {
    tls.cert = require('node:fs').readFileSync(process.env.AMQP_TLS_CERT);
    tls.key = require('node:fs').readFileSync(process.env.AMQP_TLS_KEY);
  }
  const conn = await amqp.connect(scenario === 'heartbeat' ? `${url}?heartbeat=1` : url, tls);
  // an asynchronous error must not crash node before it prints its JSON line
  conn.on('error', (e) => console.error('connection error:', e && e.message));
  try {
    const out = await fn(conn);
    process.stdout.write(JSON.stringify(out) + '\n');
  } finally {
    await conn.close().catch(() => {});
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stdout.write(JSON.stringify({ error: String(err && err.stack || err), ...errInfo(err) }) + '\n');
    process.exit(1);
  },
);
