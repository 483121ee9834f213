// Drives an official Node SDK, unmodified and with its default settings, against a clickserver.
// Usage: node node_sdks.js <segment|rudderstack> <host> <write key>
// Prints {"errors": [...]} once every message has been flushed: the SDK's own view of delivery.
'use strict';

const [sdk, host, writeKey] = process.argv.slice(2);
const errors = [];

function calls(client) {
  client.track({ anonymousId: 'anon-node', event: 'Product Viewed', properties: { product_id: 'p-1', price: 12.5 } });
  client.identify({ userId: 'user-node', anonymousId: 'anon-node', traits: { plan: 'pro' } });
  client.page({ anonymousId: 'anon-node', name: 'Home', properties: { url: 'https://shop.example/' } });
  client.alias({ previousId: 'anon-node', userId: 'user-node' });
  // More than either SDK's default flushAt (Segment 15, RudderStack 20): at least one full batch.
  for (let i = 0; i < 25; i++) {
    client.track({ userId: 'user-node', event: 'Batch Item', properties: { index: i } });
  }
}

async function segment() {
  const { Analytics } = require('@segment/analytics-node');
  const client = new Analytics({ writeKey, host });
  client.on('error', (error) => errors.push(String(error.reason || error.code || error)));
  calls(client);
  await client.closeAndFlush({ timeout: 30000 });
}

async function rudderstack() {
  const Analytics = require('@rudderstack/rudder-sdk-node');
  const client = new Analytics(writeKey, { dataPlaneUrl: host, errorHandler: (error) => errors.push(String(error)) });
  const delivered = [];
  const wrapped = {};
  for (const method of ['track', 'identify', 'page', 'alias']) {
    // Each message's callback is RudderStack's delivery report for it.
    wrapped[method] = (message) => delivered.push(new Promise((resolve) => {
      client[method](message, (error) => {
        if (error) errors.push(String(error));
        resolve();
      });
    }));
  }
  calls(wrapped);
  // Reaching flushAt (20) sent the first batch; one flush sends the rest.
  await client.flush();
  await Promise.all(delivered);
}

(sdk === 'segment' ? segment : rudderstack)()
  .then(() => console.log(JSON.stringify({ errors })))
  .catch((error) => {
    console.log(JSON.stringify({ errors: [...errors, String(error)] }));
    process.exitCode = 1;
  });
