// Parsing and checking of space-separated scope lists (RFC 6749 3.3).

import { SUPPORTED_SCOPES } from './config.js';
import { OAuthError } from './http.js';

function invalidScope(description) {
  return new OAuthError(400, 'invalid_scope', description);
}

/**
 * Parses a scope parameter into a list without duplicates.
 *
 * Uses `fallback` when the parameter is omitted. Raises invalid_scope for
 * a scope the server does not support.
 */
export function parseScope(value, fallback) {
  const text = value ?? fallback;
  const scopes = [...new Set(text.split(' ').filter((scope) => scope !== ''))];
  if (scopes.length === 0) {
    throw invalidScope('scope is empty');
  }
  for (const scope of scopes) {
    if (!SUPPORTED_SCOPES.includes(scope)) {
      throw invalidScope(
        `unsupported scope "${scope}"; supported: ${SUPPORTED_SCOPES.join(' ')}`,
      );
    }
  }
  return scopes;
}

/** Raises invalid_scope unless every requested scope was in the original grant. */
export function requireScopeSubset(requested, granted) {
  for (const scope of requested) {
    if (!granted.includes(scope)) {
      throw invalidScope(
        `scope "${scope}" was not granted; a refresh can only narrow the scope`,
      );
    }
  }
}

export function formatScope(scopes) {
  return scopes.join(' ');
}
