"""Identity sources: where meshUsers and meshUserGroups come from besides the inventory files
(OIDC logins, the LDAP connector, SCIM provisioning). Each writes into the state store under its
own source name and never changes what another source owns."""
