// Runtime settings, injected failures and request counters, set through /control.

import { SUPPORTED_GRANT_TYPES } from './config.js';

export const DEFAULT_SETTINGS = Object.freeze({
  access_token_lifetime: 3600,
  refresh_token_lifetime: null,
  authorization_code_lifetime: 60,
  device_interval: 1,
  device_expires_in: 600,
  token_padding: 0,
});

// The upper bounds only catch typing mistakes. A padding of 64 KiB already
// exceeds the header size limits of most HTTP servers.
const SETTING_LIMITS = Object.freeze({
  access_token_lifetime: { min: 0, max: 10 * 365 * 24 * 3600, nullable: false },
  refresh_token_lifetime: { min: 0, max: 10 * 365 * 24 * 3600, nullable: true },
  authorization_code_lifetime: { min: 0, max: 24 * 3600, nullable: false },
  device_interval: { min: 0, max: 3600, nullable: false },
  device_expires_in: { min: 1, max: 24 * 3600, nullable: false },
  token_padding: { min: 0, max: 64 * 1024, nullable: false },
});

export const FAILURE_ENDPOINTS = Object.freeze([
  'token',
  'introspect',
  'device_authorization',
  'authorize',
]);
export const FAILURE_MODES = Object.freeze([
  'invalid_grant',
  'invalid_client',
  '500',
  '503',
  'garbage',
  'hang',
  'slow_down',
]);

// Endpoints whose requests are counted, by the names used in /control.
export const COUNTED_ENDPOINTS = Object.freeze([
  'metadata',
  'jwks',
  'authorize',
  'token',
  'device_authorization',
  'device',
  'introspect',
  'revoke',
]);

const CONTROL_FIELDS = new Set([
  ...Object.keys(DEFAULT_SETTINGS),
  'fail',
  'revoke_user',
  'reset',
]);

/** A /control request body that cannot be applied. */
export class ControlError extends Error {}

function requireInteger(name, value, { min, max, nullable }) {
  if (value === null && nullable) {
    return;
  }
  if (!Number.isInteger(value) || value < min || value > max) {
    const allowed = nullable ? ` or null` : '';
    throw new ControlError(
      `"${name}" must be an integer from ${min} to ${max}${allowed}, got ${JSON.stringify(value)}`,
    );
  }
}

function parseFailure(entry) {
  if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) {
    throw new ControlError('"fail" must be an object or a list of objects');
  }
  for (const key of Object.keys(entry)) {
    if (!['endpoint', 'mode', 'count', 'retry_after'].includes(key)) {
      throw new ControlError(
        `unknown field "fail.${key}"; expected endpoint, mode, count, retry_after`,
      );
    }
  }

  if (!FAILURE_ENDPOINTS.includes(entry.endpoint)) {
    throw new ControlError(
      `"fail.endpoint" must be one of ${FAILURE_ENDPOINTS.join(', ')}, got ${JSON.stringify(entry.endpoint)}`,
    );
  }

  const count = entry.count ?? 1;
  requireInteger('fail.count', count, {
    min: 0,
    max: 1_000_000,
    nullable: false,
  });
  const retryAfter = entry.retry_after ?? 1;
  requireInteger('fail.retry_after', retryAfter, {
    min: 0,
    max: 86_400,
    nullable: false,
  });

  // A count of 0 clears the endpoint's failure, and then the mode may be omitted.
  if (count === 0 && entry.mode === undefined) {
    return { endpoint: entry.endpoint, mode: null, count, retryAfter };
  }
  const mode = typeof entry.mode === 'number' ? String(entry.mode) : entry.mode;
  if (!FAILURE_MODES.includes(mode)) {
    throw new ControlError(
      `"fail.mode" must be one of ${FAILURE_MODES.join(', ')}, got ${JSON.stringify(entry.mode)}`,
    );
  }
  return { endpoint: entry.endpoint, mode, count, retryAfter };
}

function emptyCounters() {
  return {
    requests: Object.fromEntries(COUNTED_ENDPOINTS.map((name) => [name, 0])),
    grant_types: Object.fromEntries(
      [...SUPPORTED_GRANT_TYPES, 'unsupported'].map((name) => [name, 0]),
    ),
  };
}

export class Control {
  settings = { ...DEFAULT_SETTINGS };
  failures = new Map();
  counters = emptyCounters();

  /** Counts a request to `endpoint`, and for the token endpoint its grant type. */
  countRequest(endpoint, grantType) {
    this.counters.requests[endpoint] += 1;
    if (endpoint === 'token') {
      const key = SUPPORTED_GRANT_TYPES.includes(grantType)
        ? grantType
        : 'unsupported';
      this.counters.grant_types[key] += 1;
    }
  }

  /** Consumes one injected failure of `endpoint` and returns it, or null when none is set. */
  takeFailure(endpoint) {
    const failure = this.failures.get(endpoint);
    if (failure === undefined) {
      return null;
    }
    failure.remaining -= 1;
    if (failure.remaining === 0) {
      this.failures.delete(endpoint);
    }
    return failure;
  }

  /**
   * Validates a POST /control body and applies it.
   *
   * Nothing changes when any field is invalid. `reset` runs first, then the
   * settings, failures and `revoke_user`, whatever their order in the body.
   * `revokeUser` performs the revocation and returns how many tokens it revoked.
   */
  apply(body, revokeUser) {
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      throw new ControlError('the body must be a JSON object');
    }
    for (const key of Object.keys(body)) {
      if (!CONTROL_FIELDS.has(key)) {
        throw new ControlError(
          `unknown field "${key}"; expected one of ${[...CONTROL_FIELDS].join(', ')}`,
        );
      }
    }
    if (body.reset !== undefined && typeof body.reset !== 'boolean') {
      throw new ControlError('"reset" must be true or false');
    }
    for (const [name, limits] of Object.entries(SETTING_LIMITS)) {
      if (name in body) {
        requireInteger(name, body[name], limits);
      }
    }
    let failures = [];
    if (body.fail !== undefined) {
      failures = (Array.isArray(body.fail) ? body.fail : [body.fail]).map(
        parseFailure,
      );
    }
    if (
      body.revoke_user !== undefined &&
      (typeof body.revoke_user !== 'string' || body.revoke_user === '')
    ) {
      throw new ControlError('"revoke_user" must be a non-empty string');
    }

    if (body.reset === true) {
      this.settings = { ...DEFAULT_SETTINGS };
      this.failures.clear();
      this.counters = emptyCounters();
    }
    for (const name of Object.keys(SETTING_LIMITS)) {
      if (name in body) {
        this.settings[name] = body[name];
      }
    }
    for (const { endpoint, mode, count, retryAfter } of failures) {
      if (count === 0) {
        this.failures.delete(endpoint);
      } else {
        this.failures.set(endpoint, { mode, remaining: count, retryAfter });
      }
    }
    if (body.revoke_user !== undefined) {
      return { revoked: revokeUser(body.revoke_user) };
    }
    return {};
  }

  snapshot() {
    const failures = {};
    for (const [endpoint, failure] of this.failures) {
      failures[endpoint] = {
        mode: failure.mode,
        remaining: failure.remaining,
        retry_after: failure.retryAfter,
      };
    }
    return {
      settings: { ...this.settings },
      failures,
      requests: { ...this.counters.requests },
      grant_types: { ...this.counters.grant_types },
    };
  }
}
