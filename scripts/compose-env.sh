#!/usr/bin/env sh
# Prints the secrets compose.yaml needs, random, as a .env file:
#   scripts/compose-env.sh > .env
# Keep .env private (it is in .gitignore and .dockerignore). Changing
# JETCHAT_JWT_SECRET invalidates every token; POSTGRES_PASSWORD is set when
# the postgres volume is first created (later changes need ALTER USER).
set -eu
secret() { head -c 32 /dev/urandom | base64 | tr -d '/+=\n'; }
for name in JETCHAT_JWT_SECRET JETCHAT_NATS_PASSWORD NATS_ADMIN_PASSWORD NATS_SYS_PASSWORD \
  SVC_ECHO_PASSWORD SVC_PUSH_PASSWORD SVC_AUDIT_PASSWORD POSTGRES_PASSWORD; do
  echo "$name=$(secret)"
done
