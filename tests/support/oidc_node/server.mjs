// A real OpenID Connect provider (npm oidc-provider 9) for replicator's end-to-end login test.
// Env: PORT (listen on 127.0.0.1), JWK_FILE (private RSA JWK, with kid, that signs ID tokens),
// CLIENT_ID, REDIRECT_URI. One public client (auth code + PKCE S256). Logins go through the
// provider's devInteractions (any login name is accepted; the account id is the login name).
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const port = Number(process.env.PORT);
const issuer = `http://127.0.0.1:${port}`;
const jwk = JSON.parse(readFileSync(process.env.JWK_FILE, 'utf8'));

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: process.env.CLIENT_ID,
      token_endpoint_auth_method: 'none',
      application_type: 'native',
      redirect_uris: [process.env.REDIRECT_URI],
      grant_types: ['authorization_code'],
      response_types: ['code'],
    },
  ],
  jwks: { keys: [jwk] },
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['preferred_username', 'given_name', 'family_name'],
  },
  // Put the scope's claims into the ID token itself (replicator reads the ID token only).
  conformIdTokenClaims: false,
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: `${id}@example.com`,
          email_verified: true,
          preferred_username: id,
          given_name: id.charAt(0).toUpperCase() + id.slice(1),
          family_name: 'Tester',
        };
      },
    };
  },
});
provider.proxy = false;
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.listen(port, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
