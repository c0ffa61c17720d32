// Fixed clients, scopes and default settings of the test authorization server.

import { timingSafeEqual } from 'node:crypto';

export const CONFIDENTIAL_CLIENT_ID = 'mailbridge-test';
export const CONFIDENTIAL_CLIENT_SECRET = 'mailbridge-test-secret';
export const PUBLIC_CLIENT_ID = 'mailbridge-public';

export const DEFAULT_USER = 'alice@example.test';
export const DEFAULT_AUDIENCE = 'mailbridge';

// Scope used when a request omits `scope` (RFC 6749 3.3 allows a default).
export const DEFAULT_SCOPE = 'imap smtp';

// Every scope the server grants. The provider-style names let clients use
// the scope strings they would send to Google or Microsoft.
export const SUPPORTED_SCOPES = Object.freeze([
  'openid',
  'email',
  'profile',
  'offline_access',
  'imap',
  'smtp',
  'https://mail.google.com/',
  'https://outlook.office.com/IMAP.AccessAsUser.All',
  'https://outlook.office.com/SMTP.Send',
]);

export const GRANT_AUTHORIZATION_CODE = 'authorization_code';
export const GRANT_REFRESH_TOKEN = 'refresh_token';
export const GRANT_CLIENT_CREDENTIALS = 'client_credentials';
export const GRANT_DEVICE_CODE = 'urn:ietf:params:oauth:grant-type:device_code';

export const SUPPORTED_GRANT_TYPES = Object.freeze([
  GRANT_AUTHORIZATION_CODE,
  GRANT_REFRESH_TOKEN,
  GRANT_CLIENT_CREDENTIALS,
  GRANT_DEVICE_CODE,
]);

const CLIENTS = new Map([
  [
    CONFIDENTIAL_CLIENT_ID,
    {
      id: CONFIDENTIAL_CLIENT_ID,
      secret: CONFIDENTIAL_CLIENT_SECRET,
      confidential: true,
    },
  ],
  [
    PUBLIC_CLIENT_ID,
    {
      id: PUBLIC_CLIENT_ID,
      secret: null,
      confidential: false,
    },
  ],
]);

/** Returns the registered client with that id, or undefined. */
export function findClient(clientId) {
  return CLIENTS.get(clientId);
}

/** Compares a presented client secret with the registered one in constant time. */
export function secretMatches(client, presentedSecret) {
  if (client.secret === null || typeof presentedSecret !== 'string') {
    return false;
  }
  const expected = Buffer.from(client.secret, 'utf8');
  const presented = Buffer.from(presentedSecret, 'utf8');
  return (
    expected.length === presented.length && timingSafeEqual(expected, presented)
  );
}

// A deliberately loose address check: one "@", no whitespace, and a dot in
// the domain, which accepts every address of the test stack.
const ADDRESS_PATTERN = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

/** Checks that a user name looks like a mail address (local@domain.tld). */
export function isAddress(value) {
  return (
    typeof value === 'string' &&
    value.length <= 254 &&
    ADDRESS_PATTERN.test(value)
  );
}
