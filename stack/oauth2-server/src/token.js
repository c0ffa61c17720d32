// POST /token: the grant types of RFC 6749 and RFC 8628.

import { createHash } from 'node:crypto';

import {
  DEFAULT_AUDIENCE,
  DEFAULT_SCOPE,
  GRANT_AUTHORIZATION_CODE,
  GRANT_CLIENT_CREDENTIALS,
  GRANT_DEVICE_CODE,
  GRANT_REFRESH_TOKEN,
  isAddress,
} from './config.js';
import { exchangeDeviceCode } from './device.js';
import {
  OAuthError,
  authenticateClient,
  invalidGrant,
  invalidRequest,
  sendJson,
} from './http.js';
import { formatScope, parseScope, requireScopeSubset } from './scope.js';

// RFC 7636 4.1: 43 to 128 characters from the unreserved set.
const CODE_VERIFIER_PATTERN = /^[A-Za-z0-9._~-]{43,128}$/;

/** Returns the audience of new tokens: RFC 8707 `resource`, else `audience`, else the grant's. */
function resolveAudience(form, grantAudience) {
  return form.resource ?? form.audience ?? grantAudience ?? DEFAULT_AUDIENCE;
}

function requireParameter(form, name) {
  const value = form[name];
  if (value === undefined) {
    throw invalidRequest(`${name} is missing`);
  }
  return value;
}

function checkCodeVerifier(codeRecord, verifier) {
  if (codeRecord.codeChallenge === null) {
    // A verifier without a challenge must fail. Otherwise an attacker who
    // strips the challenge from the authorization request could redeem the
    // code without PKCE (the PKCE downgrade attack of RFC 9700).
    if (verifier !== undefined) {
      throw invalidGrant(
        'code_verifier was sent but the authorization request had no code_challenge',
      );
    }
    return;
  }
  if (verifier === undefined) {
    throw invalidGrant(
      'code_verifier is missing; the authorization request had a code_challenge',
    );
  }
  if (!CODE_VERIFIER_PATTERN.test(verifier)) {
    throw invalidGrant(
      'code_verifier must be 43 to 128 characters of [A-Za-z0-9._~-]',
    );
  }
  const digest = createHash('sha256')
    .update(verifier, 'ascii')
    .digest('base64url');
  if (digest !== codeRecord.codeChallenge) {
    throw invalidGrant('code_verifier does not match the code_challenge');
  }
}

/**
 * Redeems an authorization code. The first redemption attempt uses the code
 * up, even when a later check fails. A second attempt revokes the tokens
 * issued from it (RFC 6749 10.5).
 */
function grantAuthorizationCode(ctx, client, form) {
  const code = requireParameter(form, 'code');
  const record = ctx.store.codes.get(code);
  if (record === undefined) {
    throw invalidGrant('authorization code is invalid');
  }
  if (record.clientId !== client.id) {
    throw invalidGrant('authorization code was issued to another client');
  }
  if (record.used) {
    if (record.familyId !== null) {
      ctx.store.revokeFamily(record.familyId);
    }
    throw invalidGrant(
      'authorization code was already used; the tokens issued from it are revoked',
    );
  }
  record.used = true;
  if (Date.now() >= record.expiresAt) {
    throw invalidGrant('authorization code has expired');
  }
  if (form.redirect_uri !== record.redirectUri) {
    throw invalidGrant(
      'redirect_uri does not match the one of the authorization request',
    );
  }
  checkCodeVerifier(record, form.code_verifier);

  const family = ctx.store.createFamily({
    user: record.user,
    clientId: client.id,
    scopes: record.scopes,
    audience: resolveAudience(form, record.audience),
  });
  record.familyId = family.id;
  return {
    family,
    user: family.user,
    scopes: family.scopes,
    audience: family.audience,
  };
}

/**
 * Redeems a refresh token and rotates it. Presenting a rotated refresh token
 * revokes its whole family, because reuse means the token leaked.
 */
function grantRefreshToken(ctx, client, form) {
  const value = requireParameter(form, 'refresh_token');
  const found = ctx.store.findRefreshToken(value);
  if (found === undefined) {
    throw invalidGrant('refresh token is invalid');
  }

  const { record, family } = found;
  if (family.clientId !== client.id) {
    throw invalidGrant('refresh token was issued to another client');
  }
  if (family.revoked) {
    throw invalidGrant('refresh token has been revoked');
  }
  if (!record.current) {
    ctx.store.revokeFamily(family.id);
    throw invalidGrant(
      'refresh token was already used; all tokens of this grant are revoked',
    );
  }
  if (record.expiresAt !== null && Date.now() >= record.expiresAt) {
    throw invalidGrant('refresh token has expired');
  }

  // RFC 6749 6: an omitted scope means the scope originally granted.
  const scopes = parseScope(form.scope, formatScope(family.scopes));
  requireScopeSubset(scopes, family.scopes);
  return {
    family,
    user: family.user,
    scopes,
    audience: resolveAudience(form, family.audience),
  };
}

function grantClientCredentials(ctx, client, form) {
  if (!client.confidential) {
    throw new OAuthError(
      400,
      'unauthorized_client',
      `public client "${client.id}" cannot use client_credentials`,
    );
  }
  const user = form.username ?? client.id;
  if (form.username !== undefined && !isAddress(form.username)) {
    throw invalidRequest(
      'username must be a mail address such as bob@example.test',
    );
  }
  const scopes = parseScope(form.scope, DEFAULT_SCOPE);
  return {
    family: null,
    user,
    scopes,
    audience: resolveAudience(form, undefined),
  };
}

const GRANTS = new Map([
  [GRANT_AUTHORIZATION_CODE, grantAuthorizationCode],
  [GRANT_REFRESH_TOKEN, grantRefreshToken],
  [GRANT_CLIENT_CREDENTIALS, grantClientCredentials],
  [GRANT_DEVICE_CODE, exchangeDeviceCode],
]);

/** Signs an access token, plus a rotated refresh token when the grant has a family, and sends them. */
async function sendTokens(ctx, client, grant) {
  const { settings } = ctx.control;
  const scope = formatScope(grant.scopes);
  const { token, claims } = await ctx.signer.signAccessToken({
    user: grant.user,
    clientId: client.id,
    scope,
    audience: grant.audience,
    lifetimeSeconds: settings.access_token_lifetime,
    paddingBytes: settings.token_padding,
  });
  ctx.store.recordAccessToken({
    jti: claims.jti,
    familyId: grant.family?.id ?? null,
    user: grant.user,
    clientId: client.id,
    exp: claims.exp,
  });

  const body = {
    access_token: token,
    token_type: 'Bearer',
    expires_in: settings.access_token_lifetime,
    scope,
  };
  if (grant.family !== null) {
    body.refresh_token = ctx.store.rotateRefreshToken(
      grant.family,
      settings.refresh_token_lifetime,
    );
  }
  sendJson(ctx.res, 200, body);
}

export async function handleToken(ctx) {
  const { form } = ctx;
  const client = authenticateClient(ctx.req, form, { required: true });
  const grantType = requireParameter(form, 'grant_type');
  const grant = GRANTS.get(grantType);
  if (grant === undefined) {
    throw new OAuthError(
      400,
      'unsupported_grant_type',
      `grant_type "${grantType}" is not supported`,
    );
  }
  await sendTokens(ctx, client, grant(ctx, client, form));
}
