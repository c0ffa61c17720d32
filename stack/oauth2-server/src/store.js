// In-memory records of authorization codes, device codes, grants and tokens.
//
// A "family" is one authorization grant: the tokens issued from one
// authorization code or device code, including every rotated refresh token.
// Revoking a family makes all of its access and refresh tokens inactive.

import { randomBytes, randomInt } from 'node:crypto';

// Expired codes stay this long so that late reuse is still detected.
const EXPIRED_CODE_RETENTION_MS = 10 * 60 * 1000;

// RFC 8628 6.1 suggests this alphabet: no vowels, no easily confused letters.
const USER_CODE_ALPHABET = 'BCDFGHJKLMNPQRSTVWXZ';

export function randomToken() {
  return randomBytes(32).toString('base64url');
}

function randomUserCode() {
  let code = '';
  for (let i = 0; i < 8; i += 1) {
    code += USER_CODE_ALPHABET[randomInt(USER_CODE_ALPHABET.length)];
  }
  return `${code.slice(0, 4)}-${code.slice(4)}`;
}

/** Canonical form of a user code: upper case, without dashes or spaces. */
export function normalizeUserCode(userCode) {
  return userCode.toUpperCase().replace(/[-\s]/g, '');
}

export class Store {
  codes = new Map();
  devices = new Map();
  devicesByUserCode = new Map();
  families = new Map();
  accessTokens = new Map();
  refreshTokens = new Map();

  /** Stores a new authorization code and returns its record. */
  createCode({
    clientId,
    redirectUri,
    scopes,
    user,
    audience,
    codeChallenge,
    lifetimeMs,
  }) {
    const record = {
      code: randomToken(),
      clientId,
      redirectUri,
      scopes,
      user,
      audience,
      codeChallenge,
      expiresAt: Date.now() + lifetimeMs,
      used: false,
      familyId: null,
    };
    this.codes.set(record.code, record);
    return record;
  }

  /** Stores a new pending device authorization and returns its record. */
  createDevice({
    clientId,
    scopes,
    loginHint,
    audience,
    lifetimeMs,
    intervalSeconds,
  }) {
    let userCode = randomUserCode();
    while (this.devicesByUserCode.has(normalizeUserCode(userCode))) {
      userCode = randomUserCode();
    }
    const record = {
      deviceCode: randomToken(),
      userCode,
      clientId,
      scopes,
      loginHint,
      audience,
      expiresAt: Date.now() + lifetimeMs,
      intervalSeconds,
      lastPollAt: null,
      status: 'pending',
      user: null,
    };
    this.devices.set(record.deviceCode, record);
    this.devicesByUserCode.set(normalizeUserCode(userCode), record);
    return record;
  }

  findDeviceByUserCode(userCode) {
    return this.devicesByUserCode.get(normalizeUserCode(userCode));
  }

  createFamily({ user, clientId, scopes, audience }) {
    const family = {
      id: randomToken(),
      user,
      clientId,
      scopes,
      audience,
      revoked: false,
    };
    this.families.set(family.id, family);
    return family;
  }

  /** Records a signed access token so that introspection and revocation can find it by jti. */
  recordAccessToken({ jti, familyId, user, clientId, exp }) {
    this.accessTokens.set(jti, {
      jti,
      familyId,
      user,
      clientId,
      exp,
      revoked: false,
    });
  }

  /**
   * Issues a new refresh token of the family and retires the family's
   * current one, so each family has at most one current refresh token.
   */
  rotateRefreshToken(family, lifetimeSeconds) {
    const previous = this.refreshTokens.get(family.currentRefreshToken);
    if (previous !== undefined) {
      previous.current = false;
    }
    const now = Date.now();
    const value = randomToken();
    this.refreshTokens.set(value, {
      familyId: family.id,
      issuedAt: now,
      expiresAt: lifetimeSeconds === null ? null : now + lifetimeSeconds * 1000,
      current: true,
    });
    family.currentRefreshToken = value;
    return value;
  }

  /** Returns the refresh token record and its family, or undefined. */
  findRefreshToken(value) {
    const record = this.refreshTokens.get(value);
    if (record === undefined) {
      return undefined;
    }
    return { record, family: this.families.get(record.familyId) };
  }

  /** Checks that an access token is neither revoked itself nor part of a revoked family. */
  isAccessTokenRevoked(record) {
    if (record.revoked) {
      return true;
    }
    return (
      record.familyId !== null && this.families.get(record.familyId).revoked
    );
  }

  revokeFamily(familyId) {
    const family = this.families.get(familyId);
    if (family !== undefined) {
      family.revoked = true;
    }
  }

  revokeAccessToken(jti) {
    const record = this.accessTokens.get(jti);
    if (record !== undefined) {
      record.revoked = true;
    }
  }

  /**
   * Revokes every family and access token of the user and returns how many
   * of them were active before. Tokens issued later are not affected.
   */
  revokeUser(user) {
    let revoked = 0;
    for (const family of this.families.values()) {
      if (family.user === user && !family.revoked) {
        family.revoked = true;
        revoked += 1;
      }
    }
    for (const record of this.accessTokens.values()) {
      if (record.user === user && !record.revoked) {
        record.revoked = true;
        revoked += 1;
      }
    }
    return revoked;
  }

  /**
   * Deletes records that can no longer change a response: expired access
   * tokens and refresh tokens, and codes well past their expiry.
   */
  prune(now = Date.now()) {
    const nowSeconds = now / 1000;
    for (const [jti, record] of this.accessTokens) {
      if (record.exp <= nowSeconds) {
        this.accessTokens.delete(jti);
      }
    }
    for (const [value, record] of this.refreshTokens) {
      if (record.expiresAt !== null && record.expiresAt <= now) {
        this.refreshTokens.delete(value);
      }
    }
    for (const [code, record] of this.codes) {
      if (record.expiresAt + EXPIRED_CODE_RETENTION_MS <= now) {
        this.codes.delete(code);
      }
    }
    for (const [deviceCode, record] of this.devices) {
      if (record.expiresAt + EXPIRED_CODE_RETENTION_MS <= now) {
        this.devices.delete(deviceCode);
        this.devicesByUserCode.delete(normalizeUserCode(record.userCode));
      }
    }
  }
}
