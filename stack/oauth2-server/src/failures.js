// Responses of the failure modes that /control injects.

import { slowDownDevicePoll } from './device.js';
import { OAuthError, sendOAuthError } from './http.js';

/**
 * Sends an injected failure in response to the request of `ctx`. Returns
 * false for `hang`, which sends nothing: the request stays open until the
 * client closes it or the server stops.
 */
export function sendInjectedFailure(ctx, failure) {
  const { res } = ctx;
  const description = 'failure injected through /control';
  switch (failure.mode) {
    case 'invalid_grant':
      sendOAuthError(res, new OAuthError(400, 'invalid_grant', description));
      return true;
    case 'invalid_client':
      sendOAuthError(
        res,
        new OAuthError(401, 'invalid_client', description, {
          'WWW-Authenticate': 'Basic realm="mailbridge-oauth2"',
        }),
      );
      return true;
    case '500':
      sendOAuthError(res, new OAuthError(500, 'server_error', description));
      return true;
    case '503':
      sendOAuthError(
        res,
        new OAuthError(503, 'temporarily_unavailable', description, {
          'Retry-After': String(failure.retryAfter),
        }),
      );
      return true;
    case 'garbage': {
      // Declared as JSON so that the client really tries to parse it.
      const body = '<html><body>garbage: this body is not JSON</body></html>\n';
      res.writeHead(200, {
        'Content-Type': 'application/json',
        'Content-Length': Buffer.byteLength(body),
      });
      res.end(body);
      return true;
    }
    case 'hang':
      return false;
    case 'slow_down': {
      // As a real slow_down, this also makes the device code's later polls
      // keep an interval 5 s longer.
      const interval = slowDownDevicePoll(ctx.store, ctx.form);
      const text =
        interval === null
          ? description
          : `${description}; poll at most every ${interval} s`;
      sendOAuthError(res, new OAuthError(400, 'slow_down', text));
      return true;
    }
    default:
      throw new Error(`unknown failure mode "${failure.mode}"`);
  }
}
