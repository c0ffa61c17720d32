// End-to-end tests: each suite starts server.js as a child process on a
// free loopback port and talks to it over HTTP.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import {
  createHash,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  sign,
  verify,
} from 'node:crypto';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, beforeEach, describe, test } from 'node:test';

const SERVER_PATH = fileURLToPath(new URL('../server.js', import.meta.url));
const CLIENT_ID = 'mailbridge-test';
const CLIENT_SECRET = 'mailbridge-test-secret';
const PUBLIC_CLIENT_ID = 'mailbridge-public';
const REDIRECT_URI = 'http://127.0.0.1:43123/callback';
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const REQUEST_TIMEOUT_MS = 10_000;

// Every token, code and secret seen by the tests, to check that none reaches the log.
const secretsSeen = new Set([CLIENT_SECRET]);

function remember(...values) {
  for (const value of values) {
    if (typeof value === 'string' && value !== '') {
      secretsSeen.add(value);
    }
  }
}

/** Starts server.js on a free port and resolves when it prints its listening line. */
async function startServerProcess() {
  const child = spawn(
    process.execPath,
    [SERVER_PATH, '--host', '127.0.0.1', '--port', '0'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
  });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(
      () =>
        reject(
          new Error(`server did not start within 10 s; stderr: ${stderr}`),
        ),
      10_000,
    );
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
      const match = /^listening on (http:\/\/127\.0\.0\.1:\d+)$/m.exec(stdout);
      if (match !== null) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(
        new Error(
          `server exited with code ${code} before listening; stderr: ${stderr}`,
        ),
      );
    });
  });
  return {
    url,
    child,
    output: () => stdout,
    errors: () => stderr,
    /** Sends SIGTERM and resolves with the exit code. */
    async stop() {
      if (child.exitCode !== null) {
        return child.exitCode;
      }
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const [code] = await exited;
      return code;
    },
  };
}

/** Waits up to 5 s until the server's stdout after `offset` matches `pattern`. */
async function waitForOutput(server, pattern, offset = 0) {
  for (let attempt = 0; attempt < 100; attempt += 1) {
    if (pattern.test(server.output().slice(offset))) {
      return;
    }
    await sleep(50);
  }
  assert.fail(`server output never matched ${pattern}`);
}

function basicAuth(clientId, secret) {
  return `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`).toString('base64')}`;
}

const CONFIDENTIAL_AUTH = {
  authorization: basicAuth(CLIENT_ID, CLIENT_SECRET),
};

async function readResponse(response) {
  const text = await response.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, headers: response.headers, text, json };
}

/** POSTs a form and returns status, headers, text and parsed JSON (undefined when not JSON). */
async function postForm(
  url,
  params,
  { headers = {}, timeoutMs = REQUEST_TIMEOUT_MS } = {},
) {
  const response = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      ...headers,
    },
    body: new URLSearchParams(params).toString(),
    signal: AbortSignal.timeout(timeoutMs),
  });
  return readResponse(response);
}

async function get(url, { timeoutMs = REQUEST_TIMEOUT_MS } = {}) {
  const response = await fetch(url, {
    redirect: 'manual',
    signal: AbortSignal.timeout(timeoutMs),
  });
  return readResponse(response);
}

function pkcePair() {
  const verifier = randomBytes(32).toString('base64url');
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  return { verifier, challenge };
}

function decodeSegment(segment) {
  return JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
}

function decodeJwt(token) {
  const [header, payload] = token.split('.');
  return { header: decodeSegment(header), payload: decodeSegment(payload) };
}

describe('oauth2 server', () => {
  let server;
  let base;

  async function control(body) {
    const response = await fetch(`${base}/control`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    return readResponse(response);
  }

  async function controlState() {
    return (await get(`${base}/control`)).json;
  }

  /** Sends an authorization request and returns the redirect Location as a URL. */
  async function authorize(params) {
    const query = new URLSearchParams({
      response_type: 'code',
      redirect_uri: REDIRECT_URI,
      ...params,
    });
    const response = await get(`${base}/authorize?${query}`);
    assert.equal(
      response.status,
      302,
      `authorize returned ${response.status}: ${response.text}`,
    );
    return new URL(response.headers.get('location'));
  }

  async function authorizationCode(params) {
    const location = await authorize(params);
    const code = location.searchParams.get('code');
    assert.ok(code, `no code in ${location.href}`);
    remember(code);
    return code;
  }

  async function token(params, options = {}) {
    const response = await postForm(`${base}/token`, params, options);
    remember(response.json?.access_token, response.json?.refresh_token);
    return response;
  }

  /** Runs the public client's code flow with PKCE and returns the token response JSON. */
  async function publicClientTokens({ scope, loginHint } = {}) {
    const { verifier, challenge } = pkcePair();
    const params = {
      client_id: PUBLIC_CLIENT_ID,
      code_challenge: challenge,
      code_challenge_method: 'S256',
    };
    if (scope !== undefined) {
      params.scope = scope;
    }
    if (loginHint !== undefined) {
      params.login_hint = loginHint;
    }
    const code = await authorizationCode(params);
    const response = await token({
      grant_type: 'authorization_code',
      client_id: PUBLIC_CLIENT_ID,
      code,
      redirect_uri: REDIRECT_URI,
      code_verifier: verifier,
    });
    assert.equal(response.status, 200, response.text);
    return response.json;
  }

  async function clientCredentialsToken(extra = {}) {
    const response = await token(
      { grant_type: 'client_credentials', ...extra },
      { headers: CONFIDENTIAL_AUTH },
    );
    assert.equal(response.status, 200, response.text);
    return response.json.access_token;
  }

  async function introspect(value, options) {
    const response = await postForm(
      `${base}/introspect`,
      { token: value },
      options,
    );
    assert.equal(response.status, 200, response.text);
    return response.json;
  }

  async function startDevice(params = {}) {
    const response = await postForm(`${base}/device_authorization`, {
      client_id: PUBLIC_CLIENT_ID,
      ...params,
    });
    assert.equal(response.status, 200, response.text);
    remember(response.json.device_code);
    return response.json;
  }

  function pollDevice(deviceCode) {
    return token({
      grant_type: DEVICE_GRANT,
      client_id: PUBLIC_CLIENT_ID,
      device_code: deviceCode,
    });
  }

  before(async () => {
    server = await startServerProcess();
    base = server.url;
  });

  after(async () => {
    const code = await server.stop();
    assert.equal(
      code,
      0,
      `server exited with ${code}; stderr: ${server.errors()}`,
    );
  });

  beforeEach(async () => {
    const response = await control({ reset: true });
    assert.equal(response.status, 200, response.text);
  });

  describe('metadata', () => {
    for (const path of [
      '/.well-known/oauth-authorization-server',
      '/.well-known/openid-configuration',
    ]) {
      test(`${path} lists endpoints`, async () => {
        const response = await get(`${base}${path}`);
        assert.equal(response.status, 200);
        assert.equal(response.headers.get('cache-control'), 'no-store');
        const metadata = response.json;
        assert.equal(metadata.issuer, base);
        assert.equal(metadata.authorization_endpoint, `${base}/authorize`);
        assert.equal(metadata.token_endpoint, `${base}/token`);
        assert.equal(
          metadata.device_authorization_endpoint,
          `${base}/device_authorization`,
        );
        assert.equal(metadata.introspection_endpoint, `${base}/introspect`);
        assert.equal(metadata.revocation_endpoint, `${base}/revoke`);
        assert.equal(metadata.jwks_uri, `${base}/jwks`);
        assert.deepEqual(metadata.code_challenge_methods_supported, ['S256']);
        assert.ok(metadata.grant_types_supported.includes(DEVICE_GRANT));
      });
    }

    test('jwks publishes public RS256 key', async () => {
      const response = await get(`${base}/jwks`);
      assert.equal(response.status, 200);
      assert.equal(response.json.keys.length, 1);
      const [key] = response.json.keys;
      assert.equal(key.kty, 'RSA');
      assert.equal(key.alg, 'RS256');
      assert.equal(typeof key.kid, 'string');
      assert.equal(
        key.d,
        undefined,
        'the JWKS must not contain the private exponent',
      );
    });

    test('unknown path returns 404', async () => {
      const response = await get(`${base}/nothing-here`);
      assert.equal(response.status, 404);
      assert.equal(response.json.error, 'not_found');
    });

    test('wrong method returns 405', async () => {
      const response = await get(`${base}/token`);
      assert.equal(response.status, 405);
      assert.equal(response.headers.get('allow'), 'POST');
    });
  });

  describe('authorize', () => {
    test('redirects with code, state and iss', async () => {
      const location = await authorize({
        client_id: CLIENT_ID,
        state: 'state-1',
      });
      assert.equal(`${location.origin}${location.pathname}`, REDIRECT_URI);
      assert.ok(location.searchParams.get('code'));
      assert.equal(location.searchParams.get('state'), 'state-1');
      assert.equal(location.searchParams.get('iss'), base);
      remember(location.searchParams.get('code'));
    });

    test('keeps query of redirect URI', async () => {
      const location = await authorize({
        client_id: CLIENT_ID,
        redirect_uri: `${REDIRECT_URI}?tab=mail`,
      });
      assert.equal(location.searchParams.get('tab'), 'mail');
      assert.ok(location.searchParams.get('code'));
      remember(location.searchParams.get('code'));
    });

    for (const redirectUri of [
      'http://127.0.0.1:1/cb',
      'http://localhost:65000/x/y',
      'http://[::1]:5000/',
      'http://127.0.0.1/',
    ]) {
      test(`accepts loopback ${redirectUri}`, async () => {
        const location = await authorize({
          client_id: CLIENT_ID,
          redirect_uri: redirectUri,
        });
        assert.ok(location.searchParams.get('code'));
        remember(location.searchParams.get('code'));
      });
    }

    for (const redirectUri of [
      'https://127.0.0.1:8080/cb',
      'http://example.test/cb',
      'http://127.0.0.2:8080/cb',
      'http://127.0.0.1:8080/cb#fragment',
      'http://user@127.0.0.1:8080/cb',
      'not a uri',
    ]) {
      test(`rejects redirect ${redirectUri} with page`, async () => {
        const query = new URLSearchParams({
          response_type: 'code',
          client_id: CLIENT_ID,
          redirect_uri: redirectUri,
        });
        const response = await get(`${base}/authorize?${query}`);
        assert.equal(response.status, 400);
        assert.equal(response.headers.get('location'), null);
        assert.match(response.headers.get('content-type'), /text\/html/);
      });
    }

    test('rejects unknown client with page', async () => {
      const query = new URLSearchParams({
        response_type: 'code',
        client_id: 'nobody',
        redirect_uri: REDIRECT_URI,
      });
      const response = await get(`${base}/authorize?${query}`);
      assert.equal(response.status, 400);
      assert.equal(response.headers.get('location'), null);
      assert.match(response.text, /unknown client/);
    });

    test('rejects missing client_id with page', async () => {
      const response = await get(
        `${base}/authorize?response_type=code&redirect_uri=${encodeURIComponent(REDIRECT_URI)}`,
      );
      assert.equal(response.status, 400);
      assert.equal(response.headers.get('location'), null);
    });

    const redirectedErrors = [
      {
        name: 'unknown scope',
        params: { client_id: CLIENT_ID, scope: 'imap admin' },
        error: 'invalid_scope',
      },
      {
        name: 'plain PKCE',
        params: {
          client_id: PUBLIC_CLIENT_ID,
          code_challenge: 'a'.repeat(43),
          code_challenge_method: 'plain',
        },
        error: 'invalid_request',
      },
      {
        name: 'challenge without method',
        params: { client_id: PUBLIC_CLIENT_ID, code_challenge: 'a'.repeat(43) },
        error: 'invalid_request',
      },
      {
        name: 'malformed challenge',
        params: {
          client_id: PUBLIC_CLIENT_ID,
          code_challenge: 'short',
          code_challenge_method: 'S256',
        },
        error: 'invalid_request',
      },
      {
        name: 'public client without PKCE',
        params: { client_id: PUBLIC_CLIENT_ID },
        error: 'invalid_request',
      },
      {
        name: 'login_hint not an address',
        params: { client_id: CLIENT_ID, login_hint: 'alice' },
        error: 'invalid_request',
      },
      {
        name: 'response_type token',
        params: { client_id: CLIENT_ID, response_type: 'token' },
        error: 'unsupported_response_type',
      },
    ];
    for (const { name, params, error } of redirectedErrors) {
      test(`redirects error for ${name}`, async () => {
        const location = await authorize({ state: 'state-2', ...params });
        assert.equal(location.searchParams.get('error'), error);
        assert.equal(location.searchParams.get('state'), 'state-2');
        assert.equal(location.searchParams.get('code'), null);
      });
    }

    test('redirects error for repeated scope', async () => {
      const query = `response_type=code&client_id=${CLIENT_ID}&redirect_uri=${encodeURIComponent(REDIRECT_URI)}&scope=imap&scope=smtp`;
      const response = await get(`${base}/authorize?${query}`);
      assert.equal(response.status, 302);
      assert.equal(
        new URL(response.headers.get('location')).searchParams.get('error'),
        'invalid_request',
      );
    });
  });

  describe('authorization code grant', () => {
    test('PKCE flow issues signed tokens', async () => {
      const { verifier, challenge } = pkcePair();
      const code = await authorizationCode({
        client_id: PUBLIC_CLIENT_ID,
        code_challenge: challenge,
        code_challenge_method: 'S256',
        scope: 'imap smtp offline_access',
        login_hint: 'carol@example.test',
      });
      const response = await token({
        grant_type: 'authorization_code',
        client_id: PUBLIC_CLIENT_ID,
        code,
        redirect_uri: REDIRECT_URI,
        code_verifier: verifier,
      });
      assert.equal(response.status, 200, response.text);
      assert.equal(response.headers.get('cache-control'), 'no-store');
      const body = response.json;
      assert.equal(body.token_type, 'Bearer');
      assert.equal(body.expires_in, 3600);
      assert.equal(body.scope, 'imap smtp offline_access');
      assert.equal(typeof body.refresh_token, 'string');

      const { header, payload } = decodeJwt(body.access_token);
      assert.equal(header.alg, 'RS256');
      assert.equal(payload.iss, base);
      assert.equal(payload.sub, 'carol@example.test');
      assert.equal(payload.email, 'carol@example.test');
      assert.equal(payload.preferred_username, 'carol@example.test');
      assert.equal(payload.aud, 'mailbridge');
      assert.equal(payload.scope, 'imap smtp offline_access');
      assert.equal(payload.client_id, PUBLIC_CLIENT_ID);
      assert.equal(payload.exp - payload.iat, 3600);
      assert.ok(Math.abs(payload.iat - Date.now() / 1000) < 60);
      assert.equal(typeof payload.jti, 'string');

      const jwks = (await get(`${base}/jwks`)).json;
      const jwk = jwks.keys.find((key) => key.kid === header.kid);
      assert.ok(jwk, `kid ${header.kid} is not in the JWKS`);
      const [headerSegment, payloadSegment, signatureSegment] =
        body.access_token.split('.');
      const valid = verify(
        'sha256',
        Buffer.from(`${headerSegment}.${payloadSegment}`),
        createPublicKey({ key: jwk, format: 'jwk' }),
        Buffer.from(signatureSegment, 'base64url'),
      );
      assert.ok(
        valid,
        'the access token signature does not verify with the JWKS key',
      );
    });

    test('default user is alice', async () => {
      const body = await publicClientTokens();
      assert.equal(
        decodeJwt(body.access_token).payload.sub,
        'alice@example.test',
      );
      assert.equal(body.scope, 'imap smtp');
    });

    test('confidential client without PKCE', async () => {
      const code = await authorizationCode({
        client_id: CLIENT_ID,
        login_hint: 'dave@example.test',
      });
      const response = await token(
        { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(response.status, 200, response.text);
      assert.equal(
        decodeJwt(response.json.access_token).payload.sub,
        'dave@example.test',
      );
      assert.equal(typeof response.json.refresh_token, 'string');
    });

    test('client secret in form body', async () => {
      const code = await authorizationCode({ client_id: CLIENT_ID });
      const response = await token({
        grant_type: 'authorization_code',
        code,
        redirect_uri: REDIRECT_URI,
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
      });
      assert.equal(response.status, 200, response.text);
    });

    test('resource sets audience', async () => {
      const code = await authorizationCode({ client_id: CLIENT_ID });
      const response = await token(
        {
          grant_type: 'authorization_code',
          code,
          redirect_uri: REDIRECT_URI,
          resource: 'imap://mail.example.test',
        },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(response.status, 200, response.text);
      assert.equal(
        decodeJwt(response.json.access_token).payload.aud,
        'imap://mail.example.test',
      );
    });

    test('verifier mismatch is invalid_grant', async () => {
      const { challenge } = pkcePair();
      const code = await authorizationCode({
        client_id: PUBLIC_CLIENT_ID,
        code_challenge: challenge,
        code_challenge_method: 'S256',
      });
      const response = await token({
        grant_type: 'authorization_code',
        client_id: PUBLIC_CLIENT_ID,
        code,
        redirect_uri: REDIRECT_URI,
        code_verifier: pkcePair().verifier,
      });
      assert.equal(response.status, 400);
      assert.equal(response.json.error, 'invalid_grant');
      assert.equal(response.json.access_token, undefined);
    });

    test('missing verifier is invalid_grant', async () => {
      const { challenge } = pkcePair();
      const code = await authorizationCode({
        client_id: PUBLIC_CLIENT_ID,
        code_challenge: challenge,
        code_challenge_method: 'S256',
      });
      const response = await token({
        grant_type: 'authorization_code',
        client_id: PUBLIC_CLIENT_ID,
        code,
        redirect_uri: REDIRECT_URI,
      });
      assert.equal(response.status, 400);
      assert.equal(response.json.error, 'invalid_grant');
    });

    test('verifier without challenge is invalid_grant', async () => {
      const code = await authorizationCode({ client_id: CLIENT_ID });
      const response = await token(
        {
          grant_type: 'authorization_code',
          code,
          redirect_uri: REDIRECT_URI,
          code_verifier: pkcePair().verifier,
        },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(response.status, 400);
      assert.equal(response.json.error, 'invalid_grant');
    });

    test('redirect_uri mismatch is invalid_grant', async () => {
      const code = await authorizationCode({ client_id: CLIENT_ID });
      const response = await token(
        {
          grant_type: 'authorization_code',
          code,
          redirect_uri: 'http://127.0.0.1:43124/callback',
        },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(response.status, 400);
      assert.equal(response.json.error, 'invalid_grant');
    });

    test('code of other client is invalid_grant', async () => {
      const { verifier, challenge } = pkcePair();
      const code = await authorizationCode({
        client_id: PUBLIC_CLIENT_ID,
        code_challenge: challenge,
        code_challenge_method: 'S256',
      });
      const response = await token(
        {
          grant_type: 'authorization_code',
          code,
          redirect_uri: REDIRECT_URI,
          code_verifier: verifier,
        },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(response.status, 400);
      assert.equal(response.json.error, 'invalid_grant');
    });

    test('code reuse revokes issued tokens', async () => {
      const code = await authorizationCode({ client_id: CLIENT_ID });
      const params = {
        grant_type: 'authorization_code',
        code,
        redirect_uri: REDIRECT_URI,
      };
      const first = await token(params, { headers: CONFIDENTIAL_AUTH });
      assert.equal(first.status, 200, first.text);
      assert.equal((await introspect(first.json.access_token)).active, true);

      const second = await token(params, { headers: CONFIDENTIAL_AUTH });
      assert.equal(second.status, 400);
      assert.equal(second.json.error, 'invalid_grant');
      assert.equal((await introspect(first.json.access_token)).active, false);
      assert.equal((await introspect(first.json.refresh_token)).active, false);
      const refreshed = await token(
        {
          grant_type: 'refresh_token',
          refresh_token: first.json.refresh_token,
        },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(refreshed.status, 400);
      assert.equal(refreshed.json.error, 'invalid_grant');
    });

    test('expired code is invalid_grant', async () => {
      await control({ authorization_code_lifetime: 1 });
      const code = await authorizationCode({ client_id: CLIENT_ID });
      await sleep(1100);
      const response = await token(
        { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(response.status, 400);
      assert.equal(response.json.error, 'invalid_grant');
      assert.match(response.json.error_description, /expired/);
    });

    test('unknown code is invalid_grant', async () => {
      const response = await token(
        {
          grant_type: 'authorization_code',
          code: 'no-such-code',
          redirect_uri: REDIRECT_URI,
        },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(response.status, 400);
      assert.equal(response.json.error, 'invalid_grant');
    });
  });

  describe('client authentication', () => {
    const cases = [
      {
        name: 'wrong Basic secret',
        headers: { authorization: basicAuth(CLIENT_ID, 'wrong') },
        params: {},
      },
      {
        name: 'wrong form secret',
        headers: {},
        params: { client_id: CLIENT_ID, client_secret: 'wrong' },
      },
      { name: 'missing secret', headers: {}, params: { client_id: CLIENT_ID } },
      {
        name: 'unknown client',
        headers: { authorization: basicAuth('nobody', 'x') },
        params: {},
      },
      {
        name: 'unknown form client',
        headers: {},
        params: { client_id: 'nobody' },
      },
      {
        name: 'secret for public client',
        headers: {},
        params: { client_id: PUBLIC_CLIENT_ID, client_secret: 'x' },
      },
      { name: 'no client at all', headers: {}, params: {} },
    ];
    for (const { name, headers, params } of cases) {
      test(`${name} is invalid_client`, async () => {
        const response = await token(
          { grant_type: 'client_credentials', ...params },
          { headers },
        );
        assert.equal(response.status, 401, response.text);
        assert.equal(response.json.error, 'invalid_client');
        assert.ok(response.headers.get('www-authenticate'));
      });
    }

    test('Basic and form secret together is invalid_request', async () => {
      const response = await token(
        { grant_type: 'client_credentials', client_secret: CLIENT_SECRET },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(response.status, 400);
      assert.equal(response.json.error, 'invalid_request');
    });

    test('unsupported grant type', async () => {
      const response = await token(
        { grant_type: 'password', username: 'a@example.test', password: 'x' },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(response.status, 400);
      assert.equal(response.json.error, 'unsupported_grant_type');
    });

    test('form content type is required', async () => {
      const response = await fetch(`${base}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...CONFIDENTIAL_AUTH },
        body: JSON.stringify({ grant_type: 'client_credentials' }),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
      const body = await response.json();
      assert.equal(response.status, 400);
      assert.equal(body.error, 'invalid_request');
    });
  });

  describe('refresh token grant', () => {
    async function refresh(refreshToken, extra = {}) {
      return token({
        grant_type: 'refresh_token',
        client_id: PUBLIC_CLIENT_ID,
        refresh_token: refreshToken,
        ...extra,
      });
    }

    test('rotates on every use', async () => {
      const initial = await publicClientTokens();
      const first = await refresh(initial.refresh_token);
      assert.equal(first.status, 200, first.text);
      assert.notEqual(first.json.refresh_token, initial.refresh_token);
      assert.notEqual(first.json.access_token, initial.access_token);
      const second = await refresh(first.json.refresh_token);
      assert.equal(second.status, 200, second.text);
      assert.notEqual(second.json.refresh_token, first.json.refresh_token);
      assert.equal(
        decodeJwt(second.json.access_token).payload.sub,
        'alice@example.test',
      );
    });

    test('introspects only the current one', async () => {
      const initial = await publicClientTokens({
        loginHint: 'erin@example.test',
      });
      const current = await introspect(initial.refresh_token);
      assert.equal(current.active, true);
      assert.equal(current.token_type, 'refresh_token');
      assert.equal(current.sub, 'erin@example.test');
      assert.equal(current.client_id, PUBLIC_CLIENT_ID);
      const rotated = await refresh(initial.refresh_token);
      assert.equal(rotated.status, 200, rotated.text);
      assert.equal((await introspect(initial.refresh_token)).active, false);
      assert.equal((await introspect(rotated.json.refresh_token)).active, true);
    });

    test('reuse is invalid_grant and revokes family', async () => {
      const initial = await publicClientTokens();
      const rotated = await refresh(initial.refresh_token);
      assert.equal(rotated.status, 200, rotated.text);

      const reused = await refresh(initial.refresh_token);
      assert.equal(reused.status, 400);
      assert.equal(reused.json.error, 'invalid_grant');

      assert.equal(
        (await introspect(rotated.json.refresh_token)).active,
        false,
      );
      assert.equal((await introspect(rotated.json.access_token)).active, false);
      assert.equal((await introspect(initial.access_token)).active, false);
      const afterReuse = await refresh(rotated.json.refresh_token);
      assert.equal(afterReuse.status, 400);
      assert.equal(afterReuse.json.error, 'invalid_grant');
    });

    test('scope narrowing is allowed', async () => {
      const initial = await publicClientTokens({
        scope: 'imap smtp offline_access',
      });
      const narrowed = await refresh(initial.refresh_token, { scope: 'imap' });
      assert.equal(narrowed.status, 200, narrowed.text);
      assert.equal(narrowed.json.scope, 'imap');
      assert.equal(decodeJwt(narrowed.json.access_token).payload.scope, 'imap');
      const restored = await refresh(narrowed.json.refresh_token);
      assert.equal(restored.status, 200, restored.text);
      assert.equal(restored.json.scope, 'imap smtp offline_access');
    });

    test('scope widening is invalid_scope', async () => {
      const initial = await publicClientTokens({ scope: 'imap' });
      const widened = await refresh(initial.refresh_token, {
        scope: 'imap smtp',
      });
      assert.equal(widened.status, 400);
      assert.equal(widened.json.error, 'invalid_scope');
      const stillCurrent = await refresh(initial.refresh_token);
      assert.equal(
        stillCurrent.status,
        200,
        'a rejected scope must not use the refresh token up',
      );
    });

    test('other client is invalid_grant', async () => {
      const initial = await publicClientTokens();
      const response = await token(
        { grant_type: 'refresh_token', refresh_token: initial.refresh_token },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(response.status, 400);
      assert.equal(response.json.error, 'invalid_grant');
    });

    test('lifetime control expires refresh token', async () => {
      await control({ refresh_token_lifetime: 1 });
      const initial = await publicClientTokens();
      assert.equal(
        typeof (await introspect(initial.refresh_token)).exp,
        'number',
      );
      await sleep(1100);
      const response = await refresh(initial.refresh_token);
      assert.equal(response.status, 400);
      assert.equal(response.json.error, 'invalid_grant');
      assert.equal((await introspect(initial.refresh_token)).active, false);
    });

    test('unknown refresh token is invalid_grant', async () => {
      const response = await refresh('not-a-refresh-token');
      assert.equal(response.status, 400);
      assert.equal(response.json.error, 'invalid_grant');
    });
  });

  describe('client credentials grant', () => {
    test('username becomes the user', async () => {
      const response = await token(
        {
          grant_type: 'client_credentials',
          username: 'bob@example.test',
          scope: 'imap',
        },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(response.status, 200, response.text);
      assert.equal(response.json.refresh_token, undefined);
      assert.equal(response.json.scope, 'imap');
      const { payload } = decodeJwt(response.json.access_token);
      assert.equal(payload.sub, 'bob@example.test');
      assert.equal(payload.email, 'bob@example.test');
      assert.equal(payload.preferred_username, 'bob@example.test');
      assert.equal(payload.client_id, CLIENT_ID);
    });

    test('user defaults to the client id', async () => {
      const accessToken = await clientCredentialsToken();
      assert.equal(decodeJwt(accessToken).payload.sub, CLIENT_ID);
    });

    test('audience parameter sets aud', async () => {
      const accessToken = await clientCredentialsToken({ audience: 'dovecot' });
      assert.equal(decodeJwt(accessToken).payload.aud, 'dovecot');
    });

    test('username must be an address', async () => {
      const response = await token(
        { grant_type: 'client_credentials', username: 'bob' },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(response.status, 400);
      assert.equal(response.json.error, 'invalid_request');
    });

    test('public client is unauthorized_client', async () => {
      const response = await token({
        grant_type: 'client_credentials',
        client_id: PUBLIC_CLIENT_ID,
      });
      assert.equal(response.status, 400);
      assert.equal(response.json.error, 'unauthorized_client');
    });

    test('unknown scope is invalid_scope', async () => {
      const response = await token(
        { grant_type: 'client_credentials', scope: 'root' },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(response.status, 400);
      assert.equal(response.json.error, 'invalid_scope');
    });
  });

  describe('device authorization grant', () => {
    test('device_authorization response fields', async () => {
      const device = await startDevice({ scope: 'imap' });
      assert.match(device.user_code, /^[A-Z]{4}-[A-Z]{4}$/);
      assert.equal(device.verification_uri, `${base}/device`);
      assert.equal(
        device.verification_uri_complete,
        `${base}/device?user_code=${device.user_code}`,
      );
      assert.equal(device.expires_in, 600);
      assert.equal(device.interval, 1);
      assert.equal(typeof device.device_code, 'string');
    });

    test('pending, slow_down, approve, tokens', async () => {
      const device = await startDevice({ scope: 'imap smtp' });
      const pending = await pollDevice(device.device_code);
      assert.equal(pending.status, 400);
      assert.equal(pending.json.error, 'authorization_pending');

      const early = await pollDevice(device.device_code);
      assert.equal(early.status, 400);
      assert.equal(early.json.error, 'slow_down');

      // slow_down raised the interval from 1 s to 6 s, so 1.1 s is still too early.
      await sleep(1100);
      const stillEarly = await pollDevice(device.device_code);
      assert.equal(stillEarly.json.error, 'slow_down');

      const page = await get(
        `${base}/device?user_code=${device.user_code}&login_hint=frank@example.test&action=approve`,
      );
      assert.equal(page.status, 200, page.text);
      assert.match(page.text, /frank@example\.test/);

      const granted = await pollDevice(device.device_code);
      assert.equal(granted.status, 200, granted.text);
      assert.equal(granted.json.scope, 'imap smtp');
      assert.equal(typeof granted.json.refresh_token, 'string');
      assert.equal(
        decodeJwt(granted.json.access_token).payload.sub,
        'frank@example.test',
      );

      const again = await pollDevice(device.device_code);
      assert.equal(again.status, 400);
      assert.equal(again.json.error, 'invalid_grant');
    });

    test('polling every interval never slows down', async () => {
      const device = await startDevice();
      for (let poll = 0; poll < 3; poll += 1) {
        if (poll > 0) {
          await sleep(1000);
        }
        const response = await pollDevice(device.device_code);
        assert.equal(
          response.json.error,
          'authorization_pending',
          `poll ${poll} returned ${response.text}`,
        );
      }
    });

    test('denied is access_denied', async () => {
      const device = await startDevice();
      const page = await get(
        `${base}/device?user_code=${device.user_code}&action=deny`,
      );
      assert.equal(page.status, 200, page.text);
      const response = await pollDevice(device.device_code);
      assert.equal(response.status, 400);
      assert.equal(response.json.error, 'access_denied');
    });

    test('expired is expired_token', async () => {
      await control({ device_expires_in: 1 });
      const device = await startDevice();
      assert.equal(device.expires_in, 1);
      await sleep(1100);
      const response = await pollDevice(device.device_code);
      assert.equal(response.status, 400);
      assert.equal(response.json.error, 'expired_token');
      const page = await get(
        `${base}/device?user_code=${device.user_code}&action=approve`,
      );
      assert.equal(page.status, 400);
    });

    test('interval control', async () => {
      await control({ device_interval: 3 });
      const device = await startDevice();
      assert.equal(device.interval, 3);
    });

    test('approval user falls back to hints', async () => {
      const hinted = await startDevice({ login_hint: 'grace@example.test' });
      await get(`${base}/device?user_code=${hinted.user_code}&action=approve`);
      const hintedTokens = await pollDevice(hinted.device_code);
      assert.equal(hintedTokens.status, 200, hintedTokens.text);
      assert.equal(
        decodeJwt(hintedTokens.json.access_token).payload.sub,
        'grace@example.test',
      );

      const plain = await startDevice();
      const lowerCaseCode = plain.user_code.toLowerCase().replace('-', '');
      const page = await get(
        `${base}/device?user_code=${lowerCaseCode}&action=approve`,
      );
      assert.equal(
        page.status,
        200,
        'user codes must match without case or dash',
      );
      const plainTokens = await pollDevice(plain.device_code);
      assert.equal(plainTokens.status, 200, plainTokens.text);
      assert.equal(
        decodeJwt(plainTokens.json.access_token).payload.sub,
        'alice@example.test',
      );
    });

    test('verification page without action shows form', async () => {
      const device = await startDevice();
      const page = await get(device.verification_uri_complete);
      assert.equal(page.status, 200);
      assert.match(page.text, /Approve/);
      const pending = await pollDevice(device.device_code);
      assert.equal(pending.json.error, 'authorization_pending');
    });

    test('unknown user code is 404', async () => {
      const page = await get(
        `${base}/device?user_code=BBBB-BBBB&action=approve`,
      );
      assert.equal(page.status, 404);
    });

    test('second decision is rejected', async () => {
      const device = await startDevice();
      await get(`${base}/device?user_code=${device.user_code}&action=deny`);
      const page = await get(
        `${base}/device?user_code=${device.user_code}&action=approve`,
      );
      assert.equal(page.status, 409);
      assert.equal(
        (await pollDevice(device.device_code)).json.error,
        'access_denied',
      );
    });

    test('device code of other client is invalid_grant', async () => {
      const device = await startDevice();
      const response = await token(
        { grant_type: DEVICE_GRANT, device_code: device.device_code },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(response.status, 400);
      assert.equal(response.json.error, 'invalid_grant');
    });

    test('unknown device scope is invalid_scope', async () => {
      const response = await postForm(`${base}/device_authorization`, {
        client_id: PUBLIC_CLIENT_ID,
        scope: 'nope',
      });
      assert.equal(response.status, 400);
      assert.equal(response.json.error, 'invalid_scope');
    });
  });

  describe('introspection', () => {
    test('active token has all fields', async () => {
      const accessToken = await clientCredentialsToken({
        username: 'heidi@example.test',
        scope: 'imap smtp',
      });
      const { payload } = decodeJwt(accessToken);
      const result = await introspect(accessToken);
      assert.deepEqual(result, {
        active: true,
        sub: 'heidi@example.test',
        username: 'heidi@example.test',
        email: 'heidi@example.test',
        scope: 'imap smtp',
        client_id: CLIENT_ID,
        exp: payload.exp,
        iat: payload.iat,
        iss: base,
        aud: 'mailbridge',
        jti: payload.jti,
        token_type: 'Bearer',
      });
    });

    test('accepts client authentication', async () => {
      const accessToken = await clientCredentialsToken();
      const result = await introspect(accessToken, {
        headers: CONFIDENTIAL_AUTH,
      });
      assert.equal(result.active, true);
    });

    test('wrong client secret is 401', async () => {
      const accessToken = await clientCredentialsToken();
      const response = await postForm(
        `${base}/introspect`,
        { token: accessToken },
        { headers: { authorization: basicAuth(CLIENT_ID, 'wrong') } },
      );
      assert.equal(response.status, 401);
      assert.equal(response.json.error, 'invalid_client');
    });

    test('missing token is invalid_request', async () => {
      const response = await postForm(`${base}/introspect`, {});
      assert.equal(response.status, 400);
      assert.equal(response.json.error, 'invalid_request');
    });

    test('expired token is inactive', async () => {
      // Only the state after `exp` is checked: how long a short-lived token
      // stays active depends on when in the second it was signed and on the
      // machine's load. 'active token has all fields' covers a live token.
      await control({ access_token_lifetime: 1 });
      const accessToken = await clientCredentialsToken();
      const { payload } = decodeJwt(accessToken);
      assert.equal(payload.exp - payload.iat, 1);
      await sleep(Math.max(0, payload.exp * 1000 - Date.now()) + 100);
      assert.deepEqual(await introspect(accessToken), { active: false });
    });

    test('revoked token is inactive', async () => {
      const accessToken = await clientCredentialsToken();
      const response = await postForm(
        `${base}/revoke`,
        { token: accessToken },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(response.status, 200);
      assert.deepEqual(await introspect(accessToken), { active: false });
    });

    test('altered payload is inactive', async () => {
      const accessToken = await clientCredentialsToken({
        username: 'ivan@example.test',
      });
      const [header, payload, signature] = accessToken.split('.');
      const claims = decodeSegment(payload);
      claims.sub = 'mallory@example.test';
      const forged = [
        header,
        Buffer.from(JSON.stringify(claims)).toString('base64url'),
        signature,
      ].join('.');
      assert.deepEqual(await introspect(forged), { active: false });
      assert.equal((await introspect(accessToken)).active, true);
    });

    test('foreign key signature is inactive', async () => {
      const accessToken = await clientCredentialsToken();
      const [headerSegment, payloadSegment] = accessToken.split('.');
      const { privateKey } = generateKeyPairSync('rsa', {
        modulusLength: 2048,
      });
      const signature = sign(
        'sha256',
        Buffer.from(`${headerSegment}.${payloadSegment}`),
        privateKey,
      );
      const forged = `${headerSegment}.${payloadSegment}.${signature.toString('base64url')}`;
      assert.deepEqual(await introspect(forged), { active: false });
    });

    test('alg none is inactive', async () => {
      const accessToken = await clientCredentialsToken();
      const { header, payload } = decodeJwt(accessToken);
      const unsignedHeader = Buffer.from(
        JSON.stringify({ ...header, alg: 'none' }),
      ).toString('base64url');
      const unsigned = `${unsignedHeader}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.`;
      assert.deepEqual(await introspect(unsigned), { active: false });
    });

    test('random string is inactive', async () => {
      assert.deepEqual(await introspect('definitely-not-a-token'), {
        active: false,
      });
      assert.deepEqual(await introspect('a.b.c'), { active: false });
    });
  });

  describe('revocation', () => {
    test('refresh token revokes its family', async () => {
      const initial = await publicClientTokens();
      const response = await postForm(`${base}/revoke`, {
        token: initial.refresh_token,
        client_id: PUBLIC_CLIENT_ID,
      });
      assert.equal(response.status, 200);
      assert.equal((await introspect(initial.refresh_token)).active, false);
      assert.equal((await introspect(initial.access_token)).active, false);
      const refreshed = await token({
        grant_type: 'refresh_token',
        client_id: PUBLIC_CLIENT_ID,
        refresh_token: initial.refresh_token,
      });
      assert.equal(refreshed.json.error, 'invalid_grant');
    });

    test('access token leaves refresh token', async () => {
      const initial = await publicClientTokens();
      await postForm(`${base}/revoke`, { token: initial.access_token });
      assert.equal((await introspect(initial.access_token)).active, false);
      assert.equal((await introspect(initial.refresh_token)).active, true);
    });

    test('unknown token is 200', async () => {
      const response = await postForm(`${base}/revoke`, {
        token: 'unknown-token',
        token_type_hint: 'refresh_token',
      });
      assert.equal(response.status, 200);
    });
  });

  describe('control', () => {
    test('defaults after reset', async () => {
      await control({
        access_token_lifetime: 5,
        token_padding: 10,
        fail: { endpoint: 'token', mode: '500', count: 3 },
      });
      const response = await control({ reset: true });
      assert.deepEqual(response.json.settings, {
        access_token_lifetime: 3600,
        refresh_token_lifetime: null,
        authorization_code_lifetime: 60,
        device_interval: 1,
        device_expires_in: 600,
        token_padding: 0,
      });
      assert.deepEqual(response.json.failures, {});
      assert.equal(response.json.requests.token, 0);
      assert.equal(response.json.grant_types.client_credentials, 0);
    });

    test('reset keeps issued tokens valid', async () => {
      const accessToken = await clientCredentialsToken();
      await control({ reset: true });
      assert.equal((await introspect(accessToken)).active, true);
    });

    test('access token lifetime', async () => {
      const response = await control({ access_token_lifetime: 120 });
      assert.equal(response.json.settings.access_token_lifetime, 120);
      const tokenResponse = await token(
        { grant_type: 'client_credentials' },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(tokenResponse.json.expires_in, 120);
      const { payload } = decodeJwt(tokenResponse.json.access_token);
      assert.equal(payload.exp - payload.iat, 120);
    });

    test('token padding length', async () => {
      const plain = await clientCredentialsToken();
      await control({ token_padding: 1000 });
      const padded = await clientCredentialsToken();
      assert.equal(decodeJwt(padded).payload.padding.length, 1000);
      assert.equal(decodeJwt(plain).payload.padding, undefined);
      // base64url turns 3 bytes into 4 characters, and `"padding":"",` adds 13 bytes.
      const growth = padded.length - plain.length;
      assert.ok(
        growth >= 1000 * (4 / 3) && growth < (1000 + 13) * (4 / 3) + 2,
        `token grew by ${growth} characters`,
      );
      assert.ok(
        padded.length > 1536 && padded.length < 3072,
        `padded token is ${padded.length} characters`,
      );
      assert.equal((await introspect(padded)).active, true);
    });

    test('revoke_user revokes only that user', async () => {
      const bobToken = await clientCredentialsToken({
        username: 'bob@example.test',
      });
      const bobTokens = await publicClientTokens({
        loginHint: 'bob@example.test',
      });
      const aliceToken = await clientCredentialsToken({
        username: 'alice@example.test',
      });
      const response = await control({ revoke_user: 'bob@example.test' });
      assert.equal(response.status, 200);
      assert.ok(response.json.revoked >= 3, `revoked ${response.json.revoked}`);
      assert.equal((await introspect(bobToken)).active, false);
      assert.equal((await introspect(bobTokens.access_token)).active, false);
      assert.equal((await introspect(bobTokens.refresh_token)).active, false);
      assert.equal((await introspect(aliceToken)).active, true);
      const newBobToken = await clientCredentialsToken({
        username: 'bob@example.test',
      });
      assert.equal(
        (await introspect(newBobToken)).active,
        true,
        'tokens issued later stay valid',
      );
    });

    test('counts requests and grant types', async () => {
      await clientCredentialsToken();
      await publicClientTokens();
      await introspect('x');
      await startDevice();
      const state = await controlState();
      assert.equal(state.requests.token, 2);
      assert.equal(state.requests.authorize, 1);
      assert.equal(state.requests.introspect, 1);
      assert.equal(state.requests.device_authorization, 1);
      assert.equal(state.grant_types.client_credentials, 1);
      assert.equal(state.grant_types.authorization_code, 1);
      assert.equal(state.grant_types.refresh_token, 0);
    });

    const invalidBodies = [
      { access_token_lifetime: -1 },
      { access_token_lifetime: 'long' },
      { device_expires_in: 0 },
      { token_padding: 1e9 },
      { unknown_setting: 1 },
      { fail: { endpoint: 'jwks', mode: '500' } },
      { fail: { endpoint: 'token', mode: 'explode' } },
      { fail: { endpoint: 'token', mode: '500', count: -2 } },
      { reset: 'yes' },
      { revoke_user: 42 },
      [],
    ];
    for (const body of invalidBodies) {
      test(`rejects ${JSON.stringify(body)}`, async () => {
        const response = await control({ access_token_lifetime: 99 });
        assert.equal(response.status, 200);
        // The valid token_padding next to the invalid field must not be applied either.
        const rejected = await control(
          Array.isArray(body) ? body : { token_padding: 7, ...body },
        );
        assert.equal(rejected.status, 400, rejected.text);
        assert.equal(rejected.json.error, 'invalid_request');
        const state = await controlState();
        assert.equal(
          state.settings.token_padding,
          0,
          'a rejected body must change nothing',
        );
        assert.equal(state.settings.access_token_lifetime, 99);
        assert.deepEqual(state.failures, {});
      });
    }

    test('invalid JSON is rejected', async () => {
      const response = await fetch(`${base}/control`, {
        method: 'POST',
        body: '{not json',
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
      assert.equal(response.status, 400);
      assert.equal((await response.json()).error, 'invalid_request');
    });
  });

  describe('failure injection', () => {
    const modes = [
      { mode: 'invalid_grant', status: 400, error: 'invalid_grant' },
      { mode: 'invalid_client', status: 401, error: 'invalid_client' },
      { mode: '500', status: 500, error: 'server_error' },
      { mode: '503', status: 503, error: 'temporarily_unavailable' },
    ];
    for (const { mode, status, error } of modes) {
      test(`token ${mode} for count requests`, async () => {
        const response = await control({
          fail: { endpoint: 'token', mode, count: 2 },
        });
        assert.deepEqual(response.json.failures.token, {
          mode,
          remaining: 2,
          retry_after: 1,
        });
        for (let attempt = 0; attempt < 2; attempt += 1) {
          const failed = await token(
            { grant_type: 'client_credentials' },
            { headers: CONFIDENTIAL_AUTH },
          );
          assert.equal(failed.status, status, `attempt ${attempt}`);
          assert.equal(failed.json.error, error);
        }
        assert.deepEqual((await controlState()).failures, {});
        const recovered = await token(
          { grant_type: 'client_credentials' },
          { headers: CONFIDENTIAL_AUTH },
        );
        assert.equal(recovered.status, 200, recovered.text);
      });
    }

    test('503 sends Retry-After', async () => {
      await control({
        fail: { endpoint: 'token', mode: '503', retry_after: 7 },
      });
      const failed = await token(
        { grant_type: 'client_credentials' },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(failed.status, 503);
      assert.equal(failed.headers.get('retry-after'), '7');
    });

    test('503 Retry-After defaults to 1', async () => {
      await control({ fail: { endpoint: 'introspect', mode: 503 } });
      const failed = await postForm(`${base}/introspect`, { token: 'x' });
      assert.equal(failed.status, 503);
      assert.equal(failed.headers.get('retry-after'), '1');
    });

    test('garbage is 200 without JSON', async () => {
      await control({ fail: { endpoint: 'token', mode: 'garbage' } });
      const failed = await token(
        { grant_type: 'client_credentials' },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(failed.status, 200);
      assert.equal(
        failed.json,
        undefined,
        `body parsed as JSON: ${failed.text}`,
      );
      assert.ok(failed.text.length > 0);
    });

    test('slow_down grows the device interval', async () => {
      const device = await startDevice();
      await control({ fail: { endpoint: 'token', mode: 'slow_down' } });

      const injected = await pollDevice(device.device_code);
      assert.equal(injected.status, 400);
      assert.equal(injected.json.error, 'slow_down');
      assert.match(injected.json.error_description, /every 6 s/);

      // The interval is now 6 s, so a poll after the old 1 s is too early.
      await sleep(1100);
      const early = await pollDevice(device.device_code);
      assert.equal(early.json.error, 'slow_down', early.text);
      assert.match(early.json.error_description, /every 11 s/);
      assert.equal((await controlState()).failures.token, undefined);
    });

    test('slow_down outside the device flow', async () => {
      await control({ fail: { endpoint: 'token', mode: 'slow_down' } });
      const failed = await token(
        { grant_type: 'client_credentials' },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(failed.status, 400);
      assert.equal(failed.json.error, 'slow_down');
      const recovered = await token(
        { grant_type: 'client_credentials' },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(recovered.status, 200, recovered.text);
    });

    test('hang until client timeout', async () => {
      await control({ fail: { endpoint: 'token', mode: 'hang' } });
      const started = Date.now();
      await assert.rejects(
        token(
          { grant_type: 'client_credentials' },
          { headers: CONFIDENTIAL_AUTH, timeoutMs: 500 },
        ),
        (error) => error.name === 'TimeoutError',
      );
      assert.ok(
        Date.now() - started >= 450,
        'the request ended before the client timeout',
      );
      const recovered = await token(
        { grant_type: 'client_credentials' },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(recovered.status, 200, recovered.text);
    });

    test('each failable endpoint', async () => {
      await control({
        fail: [
          { endpoint: 'introspect', mode: '500' },
          { endpoint: 'device_authorization', mode: 'invalid_client' },
          { endpoint: 'authorize', mode: '503', retry_after: 2 },
        ],
      });
      const state = await controlState();
      assert.deepEqual(Object.keys(state.failures).sort(), [
        'authorize',
        'device_authorization',
        'introspect',
      ]);

      const introspection = await postForm(`${base}/introspect`, {
        token: 'x',
      });
      assert.equal(introspection.status, 500);
      const device = await postForm(`${base}/device_authorization`, {
        client_id: PUBLIC_CLIENT_ID,
      });
      assert.equal(device.status, 401);
      assert.equal(device.json.error, 'invalid_client');
      const query = new URLSearchParams({
        response_type: 'code',
        client_id: CLIENT_ID,
        redirect_uri: REDIRECT_URI,
      });
      const authorization = await get(`${base}/authorize?${query}`);
      assert.equal(authorization.status, 503);
      assert.equal(authorization.headers.get('retry-after'), '2');

      assert.equal(
        (await postForm(`${base}/introspect`, { token: 'x' })).status,
        200,
      );
      assert.equal(
        (
          await postForm(`${base}/device_authorization`, {
            client_id: PUBLIC_CLIENT_ID,
          })
        ).status,
        200,
      );
      assert.equal((await get(`${base}/authorize?${query}`)).status, 302);
    });

    test('failure leaves other endpoints alone', async () => {
      await control({
        fail: { endpoint: 'introspect', mode: '500', count: 5 },
      });
      const response = await token(
        { grant_type: 'client_credentials' },
        { headers: CONFIDENTIAL_AUTH },
      );
      assert.equal(response.status, 200);
      assert.equal((await controlState()).failures.introspect.remaining, 5);
    });

    test('count 0 clears failure', async () => {
      await control({ fail: { endpoint: 'token', mode: '500', count: 3 } });
      const response = await control({ fail: { endpoint: 'token', count: 0 } });
      assert.deepEqual(response.json.failures, {});
    });

    test('failed requests are counted', async () => {
      await control({ fail: { endpoint: 'token', mode: '500' } });
      await token(
        { grant_type: 'client_credentials' },
        { headers: CONFIDENTIAL_AUTH },
      );
      const state = await controlState();
      assert.equal(state.requests.token, 1);
      assert.equal(state.grant_types.client_credentials, 1);
    });
  });

  describe('request log', () => {
    test('one line per request', async () => {
      const offset = server.output().length;
      await clientCredentialsToken();
      await waitForOutput(server, /POST \/token/, offset);
      // The log line of the /control reset before this test may arrive late,
      // so only the token lines count.
      const lines = server
        .output()
        .slice(offset)
        .split('\n')
        .filter((line) => line.includes(' /token '));
      assert.equal(lines.length, 1, lines.join('\n'));
      assert.match(
        lines[0],
        /^\S+ POST \/token grant_type=client_credentials status=200$/,
      );
    });

    test('contains no token, code or secret', async () => {
      // The log line of this last request shows that all earlier lines arrived.
      const offset = server.output().length;
      await get(`${base}/jwks`);
      await waitForOutput(server, /GET \/jwks status=200/, offset);
      const output = server.output();
      assert.ok(
        secretsSeen.size > 50,
        `only ${secretsSeen.size} values were collected`,
      );
      for (const value of secretsSeen) {
        assert.ok(
          !output.includes(value),
          `the log contains ${value.slice(0, 12)}...`,
        );
      }
    });
  });
});

describe('server process', () => {
  test('SIGTERM closes hanging requests', async () => {
    const server = await startServerProcess();
    const controlResponse = await fetch(`${server.url}/control`, {
      method: 'POST',
      body: JSON.stringify({ fail: { endpoint: 'introspect', mode: 'hang' } }),
    });
    assert.equal(controlResponse.status, 200);

    // The handlers turn the outcome into a value, so that the rejection
    // expected at shutdown is never unhandled.
    const outcome = postForm(
      `${server.url}/introspect`,
      { token: 'x' },
      { timeoutMs: 10_000 },
    ).then(
      (response) => ({ response }),
      (error) => ({ error }),
    );
    // The server logs a held request at once, with status "-".
    await waitForOutput(server, /POST \/introspect status=- injected=hang/);

    const started = Date.now();
    const exitCode = await server.stop();
    const { response, error } = await outcome;
    assert.equal(response, undefined, 'the hanging request got a response');
    assert.notEqual(
      error.name,
      'TimeoutError',
      'the client timeout ended the request, not the server',
    );
    assert.ok(
      Date.now() - started < 5000,
      'the hanging request was not closed promptly',
    );
    assert.equal(exitCode, 0);
    assert.match(server.output(), /^stopped$/m);
  });

  test('port in use exits with 1', async () => {
    const server = await startServerProcess();
    const port = new URL(server.url).port;
    const second = spawn(process.execPath, [SERVER_PATH, '--port', port], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    second.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    const [code] = await once(second, 'exit');
    assert.equal(code, 1);
    assert.match(stderr, /cannot listen/);
    assert.equal(await server.stop(), 0);
  });

  test('invalid port exits with 2', async () => {
    const child = spawn(process.execPath, [SERVER_PATH, '--port', 'abc'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    const [code] = await once(child, 'exit');
    assert.equal(code, 2);
    assert.match(stderr, /invalid port "abc"/);
  });
});
