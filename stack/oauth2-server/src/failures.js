// Responses of the failure modes that /control injects.

import { OAuthError, sendOAuthError } from './http.js';

/**
 * Sends an injected failure. Returns false for `hang`, which sends nothing:
 * the request stays open until the client closes it or the server stops.
 */
export function sendInjectedFailure(res, failure) {
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
    default:
      throw new Error(`unknown failure mode "${failure.mode}"`);
  }
}
