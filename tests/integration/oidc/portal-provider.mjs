// A real OpenID provider (npm oidc-provider, pinned in package-lock.json) for the portal's
// tests (test_portal.py): users sign in through oidc-provider's own login and consent pages
// (devInteractions: any password), and radveil's portal client gets, by the authorization
// code flow with PKCE, a JWT access token (RFC 9068, RS256) for the resource
// "urn:radveil:gateway" with audience "radveil", carrying the user's `patient`, `roles`
// and `name` from ACCOUNTS (JSON: {"login": {"patient": "PID", "roles": [...], "name": "..."}}).
// REDIRECT is the portal's redirect URI. Prints "READY <issuer>" once listening.
import http from 'node:http';
import Provider from 'oidc-provider';

const accounts = JSON.parse(process.env.ACCOUNTS || '{}');
const server = http.createServer();
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const issuer = `http://127.0.0.1:${server.address().port}`;
const scopes = ['openid', 'patient/ImagingStudy.rs', 'user/ImagingStudy.rs', 'user/ImagingStudy.c',
  'patient/Consent.rus',
  'user/AuditEvent.rs', 'user/Consent.rs'];
const scopesOf = (id) => {
  const a = accounts[id] || {};
  return scopes.filter((s) => s.startsWith(a.patient ? 'patient/' : 'user/'));
};
const provider = new Provider(issuer, {
  clients: [{
    client_id: 'radveil-portal', client_secret: process.env.SECRET || 'portal-secret',
    grant_types: ['authorization_code'], response_types: ['code'],
    redirect_uris: [process.env.REDIRECT], token_endpoint_auth_method: 'client_secret_basic',
    scope: scopes.join(' '),
  }],
  scopes,
  findAccount: (ctx, id) => ({ accountId: id, claims: () => ({ sub: id, name: accounts[id]?.name }) }),
  features: {
    devInteractions: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'urn:radveil:gateway',
      useGrantedResource: () => true,
      // A patient's tokens carry patient/ scopes only (their own compartment), staff's
      // user/ ones: scopes the account may not have are never offered.
      getResourceServerInfo: (ctx) => ({
        scope: scopesOf(ctx.oidc.entities?.AuthorizationCode?.accountId
          || ctx.oidc.session?.accountId || ctx.oidc.account?.accountId).join(' '),
        audience: 'radveil',
        accessTokenFormat: 'jwt', accessTokenTTL: Number(process.env.TTL || 600),
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  loadExistingGrant: async (ctx) => {
    // Every scope and the gateway granted at once (the consent page is the provider's, not
    // what these tests are about).
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid');
    grant.addResourceScope('urn:radveil:gateway', scopesOf(ctx.oidc.session.accountId).join(' '));
    await grant.save();
    return grant;
  },
  extraTokenClaims: (ctx, token) => {
    const a = accounts[token.accountId] || {};
    const out = {};
    if (a.roles) out.roles = a.roles;
    if (a.patient) out.patient = a.patient;
    if (a.name) out.name = a.name;
    return out;
  },
});
server.on('request', provider.callback());
console.log(`READY ${issuer}`);
