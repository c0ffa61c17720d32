// HTTP helpers: request bodies, OAuth error responses and client authentication.

import { findClient, secretMatches } from './config.js';

const MAX_BODY_BYTES = 64 * 1024;
const BASIC_REALM = 'mailbridge-oauth2';

/** An OAuth error response (RFC 6749 5.2) with its HTTP status. */
export class OAuthError extends Error {
  constructor(status, code, description, headers = {}) {
    super(description ?? code);
    this.status = status;
    this.code = code;
    this.description = description;
    this.headers = headers;
  }
}

export function invalidRequest(description) {
  return new OAuthError(400, 'invalid_request', description);
}

export function invalidGrant(description) {
  return new OAuthError(400, 'invalid_grant', description);
}

export function invalidClient(description) {
  return new OAuthError(401, 'invalid_client', description, {
    'WWW-Authenticate': `Basic realm="${BASIC_REALM}"`,
  });
}

/** Reads the whole request body, rejecting bodies over MAX_BODY_BYTES with 413. */
export async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      throw new OAuthError(
        413,
        'invalid_request',
        `request body exceeds ${MAX_BODY_BYTES} bytes`,
      );
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * Converts URL-encoded parameters to a plain object.
 *
 * Parameters without a value count as omitted (RFC 6749 3.1). A parameter
 * given twice raises invalid_request (RFC 6749 3.1 and 3.2).
 */
export function paramsToObject(searchParams) {
  const params = Object.create(null);
  const seen = new Set();
  for (const [name, value] of searchParams) {
    if (seen.has(name)) {
      throw invalidRequest(`parameter "${name}" is repeated`);
    }
    seen.add(name);
    if (value !== '') {
      params[name] = value;
    }
  }
  return params;
}

/** Reads an application/x-www-form-urlencoded body. A missing Content-Type is accepted. */
export async function readForm(req) {
  const contentType = (req.headers['content-type'] ?? '')
    .split(';')[0]
    .trim()
    .toLowerCase();
  if (
    contentType !== '' &&
    contentType !== 'application/x-www-form-urlencoded'
  ) {
    throw invalidRequest(
      `unsupported Content-Type "${contentType}"; send application/x-www-form-urlencoded`,
    );
  }
  return paramsToObject(new URLSearchParams(await readBody(req)));
}

/** Sends a JSON body with the no-store caching headers that RFC 6749 5.1 requires. */
export function sendJson(res, status, body, headers = {}) {
  const payload = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(payload),
    'Cache-Control': 'no-store',
    Pragma: 'no-cache',
    ...headers,
  });
  res.end(payload);
}

export function sendOAuthError(res, error) {
  const body = { error: error.code };
  if (error.description !== undefined) {
    body.error_description = error.description;
  }
  res.oauthError = error.code;
  sendJson(res, error.status, body, error.headers);
}

const HTML_ESCAPES = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

export function escapeHtml(text) {
  return String(text).replace(
    /[&<>"']/g,
    (character) => HTML_ESCAPES[character],
  );
}

/** Sends a small HTML page. `bodyHtml` must already be escaped. */
export function sendHtml(res, status, title, bodyHtml) {
  const page =
    '<!DOCTYPE html>\n<html><head><meta charset="utf-8">' +
    `<title>${escapeHtml(title)}</title></head>\n<body>\n<h1>${escapeHtml(title)}</h1>\n` +
    `${bodyHtml}\n</body></html>\n`;
  res.writeHead(status, {
    'Content-Type': 'text/html; charset=utf-8',
    'Content-Length': Buffer.byteLength(page),
    'Cache-Control': 'no-store',
  });
  res.end(page);
}

// Decodes one half of an HTTP Basic client credential, which RFC 6749 2.3.1
// form-encodes before base64.
function decodeFormComponent(text) {
  try {
    return decodeURIComponent(text.replace(/\+/g, ' '));
  } catch {
    throw invalidClient('HTTP Basic credentials are not valid form-encoding');
  }
}

function parseBasicCredentials(header) {
  const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
  if (match === null) {
    throw invalidClient('Authorization header is not valid HTTP Basic');
  }
  const decoded = Buffer.from(match[1], 'base64').toString('utf8');
  const separator = decoded.indexOf(':');
  if (separator < 0) {
    throw invalidClient('HTTP Basic credentials contain no ":"');
  }
  return {
    clientId: decodeFormComponent(decoded.slice(0, separator)),
    secret: decodeFormComponent(decoded.slice(separator + 1)),
  };
}

/**
 * Authenticates the client by HTTP Basic or by client_id/client_secret form fields.
 *
 * Returns the registered client, or null when the request carries no client
 * identification and `required` is false. Raises invalid_client (401) for an
 * unknown client, a wrong or missing secret of the confidential client, or a
 * secret sent for the public client.
 */
export function authenticateClient(req, form, { required }) {
  const header = req.headers.authorization;
  const usesBasic = typeof header === 'string' && /^Basic\s/i.test(header);
  let clientId;
  let secret;

  if (usesBasic) {
    if (form.client_secret !== undefined) {
      throw invalidRequest(
        'client credentials were sent both by HTTP Basic and in the body; use one method',
      );
    }
    ({ clientId, secret } = parseBasicCredentials(header));
    if (form.client_id !== undefined && form.client_id !== clientId) {
      throw invalidClient(
        'client_id in the body differs from the HTTP Basic user',
      );
    }
  } else {
    clientId = form.client_id;
    secret = form.client_secret;
  }

  if (clientId === undefined || clientId === '') {
    if (required) {
      throw invalidClient(
        'client authentication is missing; send HTTP Basic or client_id',
      );
    }
    return null;
  }

  const client = findClient(clientId);
  if (client === undefined) {
    throw invalidClient(`unknown client "${clientId}"`);
  }
  if (client.confidential) {
    if (!secretMatches(client, secret)) {
      throw invalidClient(
        `client secret for "${clientId}" is missing or wrong`,
      );
    }
  } else if (secret !== undefined && secret !== '') {
    throw invalidClient(`client "${clientId}" is public and has no secret`);
  }
  return client;
}
