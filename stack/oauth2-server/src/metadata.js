// Authorization server metadata (RFC 8414) and its OpenID Connect variant.

import { SUPPORTED_GRANT_TYPES, SUPPORTED_SCOPES } from './config.js';

const CLIENT_AUTH_METHODS = [
  'client_secret_basic',
  'client_secret_post',
  'none',
];

export function buildMetadata(issuer, openid) {
  const metadata = {
    issuer,
    authorization_endpoint: `${issuer}/authorize`,
    token_endpoint: `${issuer}/token`,
    device_authorization_endpoint: `${issuer}/device_authorization`,
    introspection_endpoint: `${issuer}/introspect`,
    revocation_endpoint: `${issuer}/revoke`,
    jwks_uri: `${issuer}/jwks`,
    scopes_supported: SUPPORTED_SCOPES,
    response_types_supported: ['code'],
    response_modes_supported: ['query'],
    grant_types_supported: SUPPORTED_GRANT_TYPES,
    code_challenge_methods_supported: ['S256'],
    token_endpoint_auth_methods_supported: CLIENT_AUTH_METHODS,
    introspection_endpoint_auth_methods_supported: CLIENT_AUTH_METHODS,
    revocation_endpoint_auth_methods_supported: CLIENT_AUTH_METHODS,
    authorization_response_iss_parameter_supported: true,
  };
  if (openid) {
    // Required by OpenID Connect Discovery 1.0 section 3, although this
    // server issues no ID tokens.
    metadata.subject_types_supported = ['public'];
    metadata.id_token_signing_alg_values_supported = ['RS256'];
  }
  return metadata;
}
