// Signing and verification of RS256 access tokens.
//
// oauth2-mock-server's OAuth2Issuer generates the key pair, signs the JWTs
// and publishes the JWKS. Verification uses node:crypto with the public keys
// from that key store, so a token signed by any other key fails.

import { createPublicKey, randomUUID, verify } from 'node:crypto';
import { OAuth2Issuer } from 'oauth2-mock-server';

const BASE64URL_PATTERN = /^[A-Za-z0-9_-]+$/;

function decodeJsonSegment(segment) {
  try {
    const value = JSON.parse(
      Buffer.from(segment, 'base64url').toString('utf8'),
    );
    return value !== null && typeof value === 'object' && !Array.isArray(value)
      ? value
      : null;
  } catch {
    return null;
  }
}

export class TokenSigner {
  #issuer;
  #publicKeys = new Map();

  constructor(issuer) {
    this.#issuer = issuer;
  }

  /** Creates a signer with one fresh RS256 key. Call setIssuerUrl before signing. */
  static async create() {
    // `false` keeps the issuer URL without a trailing slash.
    const issuer = new OAuth2Issuer(false);
    await issuer.keys.generate('RS256');
    return new TokenSigner(issuer);
  }

  setIssuerUrl(url) {
    this.#issuer.url = url;
  }

  get issuerUrl() {
    return this.#issuer.url;
  }

  /** Returns the public JWK Set (RFC 7517 5). */
  jwks() {
    return { keys: this.#issuer.keys.toJSON() };
  }

  /**
   * Signs an access token for `lifetimeSeconds` and returns the token with its claims.
   *
   * A `paddingBytes` above zero adds a `padding` claim of that many ASCII
   * characters, which makes the token about 4/3 of that size larger.
   */
  async signAccessToken({
    user,
    clientId,
    scope,
    audience,
    lifetimeSeconds,
    paddingBytes,
  }) {
    const iat = Math.floor(Date.now() / 1000);
    const claims = {
      iss: this.#issuer.url,
      sub: user,
      email: user,
      preferred_username: user,
      aud: audience,
      scope,
      client_id: clientId,
      iat,
      exp: iat + lifetimeSeconds,
      jti: randomUUID(),
    };
    if (paddingBytes > 0) {
      claims.padding = 'x'.repeat(paddingBytes);
    }
    const token = await this.#issuer.buildToken({
      scopesOrTransform: (header, payload) => {
        // The issuer adds nbf = iat - 10 s. The tokens of this server carry
        // exactly the claims above.
        delete payload.nbf;
        Object.assign(payload, claims);
      },
    });
    return { token, claims };
  }

  #publicKey(kid) {
    let key = this.#publicKeys.get(kid);
    if (key === undefined) {
      const jwk = this.#issuer.keys
        .toJSON()
        .find((candidate) => candidate.kid === kid);
      if (jwk === undefined) {
        return undefined;
      }
      key = createPublicKey({ key: jwk, format: 'jwk' });
      this.#publicKeys.set(kid, key);
    }
    return key;
  }

  /**
   * Verifies the RS256 signature of a compact JWT against this server's keys.
   *
   * Returns the payload claims, or null when the token is malformed, uses
   * another algorithm, names an unknown key or has a wrong signature. It does
   * not check `exp`.
   */
  verify(token) {
    const segments = token.split('.');
    if (
      segments.length !== 3 ||
      !segments.every((segment) => BASE64URL_PATTERN.test(segment))
    ) {
      return null;
    }
    const [headerSegment, payloadSegment, signatureSegment] = segments;
    const header = decodeJsonSegment(headerSegment);
    if (
      header === null ||
      header.alg !== 'RS256' ||
      typeof header.kid !== 'string'
    ) {
      return null;
    }
    const key = this.#publicKey(header.kid);
    if (key === undefined) {
      return null;
    }
    const signedData = Buffer.from(
      `${headerSegment}.${payloadSegment}`,
      'ascii',
    );
    const signature = Buffer.from(signatureSegment, 'base64url');
    if (!verify('sha256', signedData, key, signature)) {
      return null;
    }
    return decodeJsonSegment(payloadSegment);
  }
}
