// A real OpenID provider (npm oidc-provider, pinned in package-lock.json; installed by
// tools/setup-peers) for radveil's gateway tests (test_gateway_access.py). It issues JWT
// access tokens (RFC 9068, RS256) by the client credentials grant for the resource
// "urn:radveil:gateway" with audience "radveil", carrying the client's `roles` and `patient`
// (PATIENT, default PID-1) claims. Prints "READY <issuer>" once listening on a free
// loopback port; runs until killed.
import http from 'node:http';
import Provider from 'oidc-provider';

const server = http.createServer();
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const issuer = `http://127.0.0.1:${server.address().port}`;
const scopes = ['system/ImagingStudy.rs', 'system/ImagingStudy.cruds', 'patient/ImagingStudy.rs'];
const client = (id, extra) => ({
  client_id: id, client_secret: `${id}-secret`, grant_types: ['client_credentials'],
  redirect_uris: [], response_types: [], token_endpoint_auth_method: 'client_secret_basic',
  scope: scopes.join(' '), ...extra,
});
const provider = new Provider(issuer, {
  clients: [client('admin-service', { 'urn:radveil:roles': ['admin'] }),
            client('patient-app', { 'urn:radveil:patient': process.env.PATIENT || 'PID-1' })],
  extraClientMetadata: { properties: ['urn:radveil:roles', 'urn:radveil:patient'] },
  scopes,
  features: {
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:radveil:gateway',
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: scopes.join(' '), audience: 'radveil', accessTokenFormat: 'jwt',
        accessTokenTTL: 600, jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  extraTokenClaims: (ctx, token) => {
    const c = token.client || {};
    const out = {};
    if (c['urn:radveil:roles']) out.roles = c['urn:radveil:roles'];
    if (c['urn:radveil:patient']) out.patient = c['urn:radveil:patient'];
    return out;
  },
});
server.on('request', provider.callback());
console.log(`READY ${issuer}`);
