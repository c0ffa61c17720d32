// GET /authorize: the authorization code grant's front channel (RFC 6749 4.1),
// with PKCE (RFC 7636). Every valid request is approved without a login page.

import {
  DEFAULT_SCOPE,
  DEFAULT_USER,
  findClient,
  isAddress,
} from './config.js';
import {
  OAuthError,
  escapeHtml,
  invalidRequest,
  paramsToObject,
  sendHtml,
} from './http.js';
import { parseScope } from './scope.js';

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);

// An S256 challenge is the base64url SHA-256 digest without padding.
const S256_CHALLENGE_PATTERN = /^[A-Za-z0-9_-]{43}$/;

/**
 * Parses a redirect URI and checks that it is an http loopback URI.
 *
 * Any port is accepted, as RFC 8252 7.3 requires for native apps. Returns the
 * parsed URL, or a reason string when the URI is not acceptable.
 */
function parseLoopbackRedirect(redirectUri) {
  if (redirectUri === undefined) {
    return 'redirect_uri is missing';
  }
  let url;
  try {
    url = new URL(redirectUri);
  } catch {
    return 'redirect_uri is not an absolute URI';
  }
  if (url.protocol !== 'http:' || !LOOPBACK_HOSTS.has(url.hostname)) {
    return 'redirect_uri must be http://127.0.0.1, http://localhost or http://[::1] with any port';
  }
  if (redirectUri.includes('#')) {
    return 'redirect_uri must not contain a fragment';
  }
  if (url.username !== '' || url.password !== '') {
    return 'redirect_uri must not contain user information';
  }
  return url;
}

function sendErrorPage(ctx, reason) {
  ctx.res.oauthError = 'invalid_request';
  sendHtml(
    ctx.res,
    400,
    'Authorization request rejected',
    `<p>${escapeHtml(reason)}</p>\n<p>The request was not redirected because the client or redirect URI is not trusted.</p>`,
  );
}

function redirect(ctx, redirectUrl, parameters) {
  const location = new URL(redirectUrl);
  for (const [name, value] of Object.entries(parameters)) {
    if (value !== undefined) {
      location.searchParams.set(name, value);
    }
  }
  // RFC 9207: the iss parameter identifies the server that sent the response.
  location.searchParams.set('iss', ctx.signer.issuerUrl);
  ctx.res.writeHead(302, {
    Location: location.href,
    'Cache-Control': 'no-store',
  });
  ctx.res.end();
}

/** Validates the parameters that are safe to report by redirect and returns the code request. */
function validateCodeRequest(params, client) {
  if (params.response_type === undefined) {
    throw invalidRequest('response_type is missing');
  }
  if (params.response_type !== 'code') {
    throw new OAuthError(
      400,
      'unsupported_response_type',
      'only response_type=code is supported',
    );
  }
  const scopes = parseScope(params.scope, DEFAULT_SCOPE);

  const challenge = params.code_challenge;
  const method = params.code_challenge_method;
  if (method !== undefined && method !== 'S256') {
    throw invalidRequest(
      `code_challenge_method "${method}" is not supported; use S256`,
    );
  }
  if (challenge === undefined) {
    if (method !== undefined) {
      throw invalidRequest(
        'code_challenge_method was sent without code_challenge',
      );
    }
    if (!client.confidential) {
      throw invalidRequest(
        `PKCE is required for public client "${client.id}"; send code_challenge with S256`,
      );
    }
  } else {
    // Without a method RFC 7636 4.3 means plain, which this server rejects.
    if (method === undefined) {
      throw invalidRequest(
        'code_challenge_method is missing; plain is not supported, use S256',
      );
    }
    if (!S256_CHALLENGE_PATTERN.test(challenge)) {
      throw invalidRequest(
        'code_challenge must be 43 base64url characters (an S256 digest)',
      );
    }
  }

  const user = params.login_hint ?? DEFAULT_USER;
  if (!isAddress(user)) {
    throw invalidRequest(
      'login_hint must be a mail address such as alice@example.test',
    );
  }
  return { scopes, user, codeChallenge: challenge ?? null };
}

export function handleAuthorize(ctx) {
  let params;
  let repeated = null;
  try {
    params = paramsToObject(ctx.url.searchParams);
  } catch (error) {
    // Keep the first value of each parameter so that a repeated parameter
    // other than client_id or redirect_uri can still be reported by redirect.
    repeated = error;
    params = Object.create(null);
    for (const [name, value] of ctx.url.searchParams) {
      if (!(name in params) && value !== '') {
        params[name] = value;
      }
    }
  }

  // RFC 6749 4.1.2.1: without a valid client and redirect URI the error
  // must not be sent to the redirect URI.
  if (
    ctx.url.searchParams.getAll('client_id').length > 1 ||
    ctx.url.searchParams.getAll('redirect_uri').length > 1
  ) {
    sendErrorPage(ctx, 'client_id and redirect_uri must each be sent once');
    return;
  }
  if (params.client_id === undefined) {
    sendErrorPage(ctx, 'client_id is missing');
    return;
  }
  const client = findClient(params.client_id);
  if (client === undefined) {
    sendErrorPage(ctx, `unknown client "${params.client_id}"`);
    return;
  }
  const redirectUrl = parseLoopbackRedirect(params.redirect_uri);
  if (typeof redirectUrl === 'string') {
    sendErrorPage(ctx, redirectUrl);
    return;
  }

  let request;
  try {
    if (repeated !== null) {
      throw repeated;
    }
    request = validateCodeRequest(params, client);
  } catch (error) {
    if (!(error instanceof OAuthError)) {
      throw error;
    }
    ctx.res.oauthError = error.code;
    redirect(ctx, redirectUrl, {
      error: error.code,
      error_description: error.description,
      state: params.state,
    });
    return;
  }

  const code = ctx.store.createCode({
    clientId: client.id,
    redirectUri: params.redirect_uri,
    scopes: request.scopes,
    user: request.user,
    audience: params.resource ?? params.audience,
    codeChallenge: request.codeChallenge,
    lifetimeMs: ctx.control.settings.authorization_code_lifetime * 1000,
  });
  redirect(ctx, redirectUrl, { code: code.code, state: params.state });
}
