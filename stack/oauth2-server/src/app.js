// HTTP server: routing, request logging, failure injection and /control.

import { createServer } from 'node:http';

import { handleAuthorize } from './authorize.js';
import { Control, ControlError } from './control.js';
import {
  handleDeviceAuthorization,
  handleDeviceVerification,
} from './device.js';
import {
  OAuthError,
  readBody,
  readForm,
  sendJson,
  sendOAuthError,
} from './http.js';
import { handleIntrospect, handleRevoke } from './introspect.js';
import { sendInjectedFailure } from './failures.js';
import { TokenSigner } from './jwt.js';
import { buildMetadata } from './metadata.js';
import { Store } from './store.js';
import { handleToken } from './token.js';

const PRUNE_INTERVAL_MS = 60 * 1000;

async function handleControl(ctx) {
  const { req, res, control, store } = ctx;
  if (req.method === 'GET') {
    sendJson(res, 200, control.snapshot());
    return;
  }
  const text = await readBody(req);
  let body;
  try {
    body = text.trim() === '' ? {} : JSON.parse(text);
  } catch (error) {
    sendOAuthError(
      res,
      new OAuthError(
        400,
        'invalid_request',
        `body is not valid JSON: ${error.message}`,
      ),
    );
    return;
  }
  try {
    const result = control.apply(body, (user) => store.revokeUser(user));
    sendJson(res, 200, { ...control.snapshot(), ...result });
  } catch (error) {
    if (!(error instanceof ControlError)) {
      throw error;
    }
    sendOAuthError(res, new OAuthError(400, 'invalid_request', error.message));
  }
}

// Route table. `counter` names the request counter, `failable` marks the
// endpoints that /control can make fail, and `form` marks POST endpoints
// with a form body.
const ROUTES = new Map([
  [
    '/.well-known/oauth-authorization-server',
    {
      methods: ['GET'],
      counter: 'metadata',
      handler: (ctx) =>
        sendJson(ctx.res, 200, buildMetadata(ctx.issuer, false)),
    },
  ],
  [
    '/.well-known/openid-configuration',
    {
      methods: ['GET'],
      counter: 'metadata',
      handler: (ctx) => sendJson(ctx.res, 200, buildMetadata(ctx.issuer, true)),
    },
  ],
  [
    '/jwks',
    {
      methods: ['GET'],
      counter: 'jwks',
      handler: (ctx) => sendJson(ctx.res, 200, ctx.signer.jwks()),
    },
  ],
  [
    '/authorize',
    {
      methods: ['GET'],
      counter: 'authorize',
      failable: true,
      handler: handleAuthorize,
    },
  ],
  [
    '/token',
    {
      methods: ['POST'],
      counter: 'token',
      failable: true,
      form: true,
      handler: handleToken,
    },
  ],
  [
    '/device_authorization',
    {
      methods: ['POST'],
      counter: 'device_authorization',
      failable: true,
      form: true,
      handler: handleDeviceAuthorization,
    },
  ],
  [
    '/device',
    { methods: ['GET'], counter: 'device', handler: handleDeviceVerification },
  ],
  [
    '/introspect',
    {
      methods: ['POST'],
      counter: 'introspect',
      failable: true,
      form: true,
      handler: handleIntrospect,
    },
  ],
  [
    '/revoke',
    { methods: ['POST'], counter: 'revoke', form: true, handler: handleRevoke },
  ],
  ['/control', { methods: ['GET', 'POST'], handler: handleControl }],
]);

/** Formats one log line. It names no token, code, secret or query value. */
function formatLogLine(req, path, entry, status) {
  const fields = [new Date().toISOString(), req.method, path];
  if (entry.grantType !== undefined) {
    fields.push(`grant_type=${entry.grantType}`);
  }
  fields.push(`status=${status}`);
  if (entry.error !== undefined) {
    fields.push(`error=${entry.error}`);
  }
  if (entry.injected !== undefined) {
    fields.push(`injected=${entry.injected}`);
  }
  return fields.join(' ');
}

async function dispatch(ctx, route, entry) {
  const { req, res } = ctx;
  if (!route.methods.includes(req.method)) {
    sendOAuthError(
      res,
      new OAuthError(
        405,
        'invalid_request',
        `method ${req.method} is not allowed; use ${route.methods.join(' or ')}`,
        { Allow: route.methods.join(', ') },
      ),
    );
    return true;
  }
  if (route.form) {
    ctx.form = await readForm(req);
    // The grant type is logged only when it is a plain name or URN, so a
    // mistyped secret in the wrong field never reaches the log.
    const grantType = ctx.form.grant_type;
    if (grantType !== undefined && /^[A-Za-z0-9_:.-]{1,64}$/.test(grantType)) {
      entry.grantType = grantType;
    }
  }
  if (route.counter !== undefined) {
    ctx.control.countRequest(route.counter, ctx.form?.grant_type);
  }
  if (route.failable) {
    const failure = ctx.control.takeFailure(route.counter);
    if (failure !== null) {
      entry.injected = failure.mode;
      return sendInjectedFailure(ctx, failure);
    }
  }
  await route.handler(ctx);
  return true;
}

/**
 * Starts the authorization server and resolves once it is listening.
 *
 * `issuer` overrides the issuer URL, which is otherwise http://HOST:PORT with
 * the port actually bound (so `port: 0` works). `log` receives one line per
 * request. Returns `{ url, listenUrl, close }`, where `url` is the issuer.
 * `close` also ends open and hanging requests.
 */
export async function startServer({
  host = '127.0.0.1',
  port = 9080,
  issuer,
  log = console.log,
} = {}) {
  const signer = await TokenSigner.create();
  const store = new Store();
  const control = new Control();

  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://request.invalid');
    const route = ROUTES.get(url.pathname);
    const entry = {};
    const ctx = {
      req,
      res,
      url,
      issuer: signer.issuerUrl,
      signer,
      store,
      control,
      form: null,
    };

    res.on('finish', () => {
      entry.error ??= res.oauthError;
      log(formatLogLine(req, url.pathname, entry, res.statusCode));
    });

    const handle = async () => {
      if (route === undefined) {
        sendOAuthError(
          res,
          new OAuthError(404, 'not_found', `no endpoint at ${url.pathname}`),
        );
        return;
      }
      const answered = await dispatch(ctx, route, entry);
      if (!answered) {
        log(formatLogLine(req, url.pathname, entry, '-'));
      }
    };
    handle().catch((error) => {
      // A client that disconnects while its body is read ends up here.
      const clientGone = res.socket === null || res.socket.destroyed;
      if (clientGone && !(error instanceof OAuthError)) {
        log(
          `${new Date().toISOString()} ${req.method} ${url.pathname} client closed the connection: ${error.message}`,
        );
        return;
      }
      if (error instanceof OAuthError) {
        sendOAuthError(res, error);
        return;
      }
      log(
        `${new Date().toISOString()} ${req.method} ${url.pathname} internal error: ${error.stack ?? error}`,
      );
      if (!res.headersSent) {
        sendOAuthError(
          res,
          new OAuthError(
            500,
            'server_error',
            'internal error; see the server log',
          ),
        );
      } else {
        res.destroy();
      }
    });
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port: boundPort } = server.address();
  const hostInUrl = host.includes(':') ? `[${host}]` : host;
  const listenUrl = `http://${hostInUrl}:${boundPort}`;
  signer.setIssuerUrl(issuer ?? listenUrl);

  const pruneTimer = setInterval(() => store.prune(), PRUNE_INTERVAL_MS);
  pruneTimer.unref();

  return {
    url: signer.issuerUrl,
    listenUrl,
    close() {
      clearInterval(pruneTimer);
      return new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
