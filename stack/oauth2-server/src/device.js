// The device authorization grant (RFC 8628): POST /device_authorization,
// the GET /device verification page and the device_code token request.

import {
  DEFAULT_SCOPE,
  DEFAULT_USER,
  GRANT_DEVICE_CODE,
  findClient,
  isAddress,
} from './config.js';
import {
  OAuthError,
  authenticateClient,
  escapeHtml,
  invalidGrant,
  invalidRequest,
  paramsToObject,
  sendHtml,
  sendJson,
} from './http.js';
import { formatScope, parseScope } from './scope.js';

// RFC 8628 3.5: each slow_down adds 5 seconds to the polling interval.
const SLOW_DOWN_INCREMENT_SECONDS = 5;

// A poll that arrives this much before the interval has passed still counts
// as on time, so clients on a fixed schedule with timer jitter are not
// punished. A client polling at half of a 1 s interval still gets slow_down.
const POLL_LEEWAY_MS = 200;

export function handleDeviceAuthorization(ctx) {
  const { form, control, store, signer } = ctx;
  const client = authenticateClient(ctx.req, form, { required: true });
  const scopes = parseScope(form.scope, DEFAULT_SCOPE);
  if (form.login_hint !== undefined && !isAddress(form.login_hint)) {
    throw invalidRequest(
      'login_hint must be a mail address such as alice@example.test',
    );
  }
  const { device_expires_in: expiresIn, device_interval: interval } =
    control.settings;
  const record = store.createDevice({
    clientId: client.id,
    scopes,
    loginHint: form.login_hint ?? null,
    audience: form.resource ?? form.audience,
    lifetimeMs: expiresIn * 1000,
    intervalSeconds: interval,
  });
  const verificationUri = `${signer.issuerUrl}/device`;
  sendJson(ctx.res, 200, {
    device_code: record.deviceCode,
    user_code: record.userCode,
    verification_uri: verificationUri,
    verification_uri_complete: `${verificationUri}?user_code=${encodeURIComponent(record.userCode)}`,
    expires_in: expiresIn,
    interval,
  });
}

/**
 * Redeems a device code at the token endpoint (RFC 8628 3.4 and 3.5).
 *
 * Returns the grant when the user has approved, and raises the polling
 * errors otherwise. The first poll is never slow_down. A poll that comes
 * too early raises slow_down and adds 5 s to the interval that the next
 * polls of this device code must keep.
 */
export function exchangeDeviceCode(ctx, client, form) {
  const deviceCode = form.device_code;
  if (deviceCode === undefined) {
    throw invalidRequest('device_code is missing');
  }
  const record = ctx.store.devices.get(deviceCode);
  if (record === undefined) {
    throw invalidGrant('device_code is invalid');
  }
  if (record.clientId !== client.id) {
    throw invalidGrant('device_code was issued to another client');
  }
  if (record.status === 'redeemed') {
    throw invalidGrant('device_code was already redeemed');
  }
  const now = Date.now();
  if (now >= record.expiresAt) {
    throw new OAuthError(
      400,
      'expired_token',
      'device_code has expired; start a new device authorization',
    );
  }
  if (record.status === 'denied') {
    throw new OAuthError(
      400,
      'access_denied',
      'the user denied the device authorization',
    );
  }
  if (record.status === 'approved') {
    record.status = 'redeemed';
    const family = ctx.store.createFamily({
      user: record.user,
      clientId: client.id,
      scopes: record.scopes,
      audience: form.resource ?? form.audience ?? record.audience,
    });
    return {
      family,
      user: family.user,
      scopes: family.scopes,
      audience: family.audience,
    };
  }

  const previousPollAt = record.lastPollAt;
  record.lastPollAt = now;
  if (
    previousPollAt !== null &&
    now - previousPollAt < record.intervalSeconds * 1000 - POLL_LEEWAY_MS
  ) {
    record.intervalSeconds += SLOW_DOWN_INCREMENT_SECONDS;
    throw new OAuthError(
      400,
      'slow_down',
      `poll at most every ${record.intervalSeconds} s`,
    );
  }
  throw new OAuthError(
    400,
    'authorization_pending',
    'the user has not approved the device yet',
  );
}

/**
 * Applies a slow_down to the device code of a device_code token request
 * (RFC 8628 3.5): adds 5 s to its interval and measures the next poll from
 * now. Returns the new interval in seconds, or null when `form` names no
 * device code that may still be redeemed.
 */
export function slowDownDevicePoll(store, form) {
  if (form?.grant_type !== GRANT_DEVICE_CODE) {
    return null;
  }
  const record = store.devices.get(form.device_code);
  if (record === undefined || !['pending', 'approved'].includes(record.status)) {
    return null;
  }
  record.lastPollAt = Date.now();
  record.intervalSeconds += SLOW_DOWN_INCREMENT_SECONDS;
  return record.intervalSeconds;
}

function sendDevicePage(res, status, title, message) {
  sendHtml(res, status, title, `<p>${escapeHtml(message)}</p>`);
}

function sendUserCodeForm(res) {
  sendHtml(
    res,
    200,
    'Device sign-in',
    '<form method="get" action="/device">\n' +
      '<label>User code <input name="user_code" autocomplete="off"></label>\n' +
      '<label>Address <input name="login_hint" placeholder="alice@example.test"></label>\n' +
      '<button name="action" value="approve">Approve</button>\n' +
      '<button name="action" value="deny">Deny</button>\n' +
      '</form>',
  );
}

function sendConsentPage(res, record) {
  const client = findClient(record.clientId);
  const userCode = escapeHtml(record.userCode);
  const hint = escapeHtml(record.loginHint ?? DEFAULT_USER);
  sendHtml(
    res,
    200,
    'Device sign-in',
    `<p>Client <code>${escapeHtml(client.id)}</code> requests scope <code>${escapeHtml(formatScope(record.scopes))}</code>.</p>\n` +
      '<form method="get" action="/device">\n' +
      `<input type="hidden" name="user_code" value="${userCode}">\n` +
      `<label>Address <input name="login_hint" value="${hint}"></label>\n` +
      '<button name="action" value="approve">Approve</button>\n' +
      '<button name="action" value="deny">Deny</button>\n' +
      '</form>',
  );
}

/**
 * GET /device: approves or denies a device authorization without a login.
 *
 * With `action=approve` the user is `login_hint`, else the hint given at
 * device authorization, else alice@example.test. Without `action` it shows
 * a form.
 */
export function handleDeviceVerification(ctx) {
  const { res } = ctx;
  let params;
  try {
    params = paramsToObject(ctx.url.searchParams);
  } catch (error) {
    sendDevicePage(res, 400, 'Device sign-in failed', error.description);
    return;
  }
  if (params.user_code === undefined) {
    sendUserCodeForm(res);
    return;
  }
  const record = ctx.store.findDeviceByUserCode(params.user_code);
  if (record === undefined) {
    sendDevicePage(
      res,
      404,
      'Device sign-in failed',
      `user code "${params.user_code}" was not found`,
    );
    return;
  }
  if (Date.now() >= record.expiresAt) {
    sendDevicePage(
      res,
      400,
      'Device sign-in failed',
      `user code ${record.userCode} has expired`,
    );
    return;
  }
  if (record.status !== 'pending') {
    sendDevicePage(
      res,
      409,
      'Device sign-in failed',
      `user code ${record.userCode} is already ${record.status}`,
    );
    return;
  }

  const action = params.action;
  if (action === undefined) {
    sendConsentPage(res, record);
    return;
  }
  if (action === 'deny') {
    record.status = 'denied';
    sendDevicePage(
      res,
      200,
      'Device sign-in denied',
      `user code ${record.userCode} was denied`,
    );
    return;
  }
  if (action !== 'approve') {
    sendDevicePage(
      res,
      400,
      'Device sign-in failed',
      `action must be approve or deny, got "${action}"`,
    );
    return;
  }
  const user = params.login_hint ?? record.loginHint ?? DEFAULT_USER;
  if (!isAddress(user)) {
    sendDevicePage(
      res,
      400,
      'Device sign-in failed',
      'login_hint must be a mail address such as alice@example.test',
    );
    return;
  }
  record.status = 'approved';
  record.user = user;
  sendDevicePage(
    res,
    200,
    'Device sign-in approved',
    `user code ${record.userCode} is approved for ${user}`,
  );
}
