#!/usr/bin/env node
// Command line entry point of the mailbridge test authorization server.

import { parseArgs } from 'node:util';

import { startServer } from './src/app.js';

const USAGE = `Usage: node server.js [--host HOST] [--port PORT] [--issuer URL]

  --host HOST    address to listen on (default 127.0.0.1, env OAUTH2_SERVER_HOST)
  --port PORT    TCP port, 0 picks a free one (default 9080, env OAUTH2_SERVER_PORT)
  --issuer URL   issuer URL in tokens and metadata, for a server reached under
                 another name (default http://HOST:PORT, env OAUTH2_SERVER_ISSUER)
`;

function fail(message) {
  process.stderr.write(`error: ${message}\n\n${USAGE}`);
  process.exit(2);
}

function parseOptions() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        host: { type: 'string' },
        port: { type: 'string' },
        issuer: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (error) {
    fail(error.message);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const host = values.host ?? process.env.OAUTH2_SERVER_HOST ?? '127.0.0.1';
  const portText = values.port ?? process.env.OAUTH2_SERVER_PORT ?? '9080';
  const port = Number(portText);
  if (!/^\d+$/.test(portText) || port > 65535) {
    fail(`invalid port "${portText}"; expected an integer from 0 to 65535`);
  }
  const issuer = values.issuer ?? process.env.OAUTH2_SERVER_ISSUER;
  if (issuer !== undefined && !/^https?:\/\/[^/]+$/.test(issuer)) {
    fail(
      `invalid issuer "${issuer}"; expected http(s)://HOST[:PORT] without a path`,
    );
  }
  return { host, port, issuer };
}

const options = parseOptions();
let server;
try {
  server = await startServer({ ...options, log: (line) => console.log(line) });
} catch (error) {
  process.stderr.write(
    `error: cannot listen on ${options.host}:${options.port}: ${error.message}\n`,
  );
  process.exit(1);
}
console.log(`listening on ${server.listenUrl}`);
if (server.url !== server.listenUrl) {
  console.log(`issuer ${server.url}`);
}

let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, async () => {
    if (stopping) {
      return;
    }
    stopping = true;
    console.log(`received ${signal}, stopping`);
    await server.close();
    console.log('stopped');
  });
}
