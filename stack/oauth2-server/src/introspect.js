// POST /introspect (RFC 7662) and POST /revoke (RFC 7009).

import { authenticateClient, invalidRequest, sendJson } from './http.js';
import { formatScope } from './scope.js';

const INACTIVE = Object.freeze({ active: false });

function introspectAccessToken(ctx, token) {
  const claims = ctx.signer.verify(token);
  if (
    claims === null ||
    typeof claims.jti !== 'string' ||
    typeof claims.exp !== 'number'
  ) {
    return INACTIVE;
  }
  const record = ctx.store.accessTokens.get(claims.jti);
  if (record === undefined || ctx.store.isAccessTokenRevoked(record)) {
    return INACTIVE;
  }
  if (Date.now() / 1000 >= claims.exp) {
    return INACTIVE;
  }
  return {
    active: true,
    sub: claims.sub,
    username: claims.preferred_username,
    email: claims.email,
    scope: claims.scope,
    client_id: claims.client_id,
    exp: claims.exp,
    iat: claims.iat,
    iss: claims.iss,
    aud: claims.aud,
    jti: claims.jti,
    // RFC 7662 token_type is the RFC 6749 type, and Dovecot rejects anything but Bearer.
    token_type: 'Bearer',
  };
}

function introspectRefreshToken(ctx, token) {
  const found = ctx.store.findRefreshToken(token);
  if (found === undefined) {
    return INACTIVE;
  }
  const { record, family } = found;
  if (!record.current || family.revoked) {
    return INACTIVE;
  }
  if (record.expiresAt !== null && Date.now() >= record.expiresAt) {
    return INACTIVE;
  }
  const response = {
    active: true,
    sub: family.user,
    username: family.user,
    email: family.user,
    scope: formatScope(family.scopes),
    client_id: family.clientId,
    iat: Math.floor(record.issuedAt / 1000),
    iss: ctx.signer.issuerUrl,
    aud: family.audience,
    token_type: 'refresh_token',
  };
  if (record.expiresAt !== null) {
    response.exp = Math.floor(record.expiresAt / 1000);
  }
  return response;
}

/**
 * Returns the RFC 7662 response for a token. Access tokens are JWTs, so a
 * token with two dots is checked as one, and any other string as a refresh token.
 */
function introspect(ctx, token) {
  if (token.split('.').length === 3) {
    return introspectAccessToken(ctx, token);
  }
  return introspectRefreshToken(ctx, token);
}

/** Client authentication is optional, because Dovecot sends only `token`. */
export function handleIntrospect(ctx) {
  authenticateClient(ctx.req, ctx.form, { required: false });
  const token = ctx.form.token;
  if (token === undefined) {
    throw invalidRequest('token is missing');
  }
  sendJson(ctx.res, 200, introspect(ctx, token));
}

/**
 * Revokes an access token by its jti, or a refresh token together with its
 * whole family (RFC 7009 2.1). Unknown and invalid tokens also get 200
 * (RFC 7009 2.2). Client authentication is optional, and the server does
 * not check which client the token was issued to.
 */
export function handleRevoke(ctx) {
  authenticateClient(ctx.req, ctx.form, { required: false });
  const token = ctx.form.token;
  if (token === undefined) {
    throw invalidRequest('token is missing');
  }
  const claims = ctx.signer.verify(token);
  if (claims !== null && typeof claims.jti === 'string') {
    ctx.store.revokeAccessToken(claims.jti);
  } else {
    const found = ctx.store.findRefreshToken(token);
    if (found !== undefined) {
      ctx.store.revokeFamily(found.family.id);
    }
  }
  ctx.res.writeHead(200, { 'Cache-Control': 'no-store', 'Content-Length': 0 });
  ctx.res.end();
}
