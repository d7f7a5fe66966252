#!/bin/sh
# Runs once, on MongoDB's first start with an empty volume (docker-entrypoint-initdb.d): refuses the
# .env.example placeholders, then creates capq's own user with readWrite on capq's database only.
set -eu
case "$MONGO_INITDB_ROOT_PASSWORD $MONGO_APP_PASSWORD" in
  *change-me*) echo "refusing to initialise: a MongoDB password in .env is still the .env.example placeholder" >&2
               exit 1 ;;
esac
mongosh --quiet --username "$MONGO_INITDB_ROOT_USERNAME" --password "$MONGO_INITDB_ROOT_PASSWORD" \
  --authenticationDatabase admin "$MONGO_APP_DB" --eval '
    db.createUser({user: process.env.MONGO_APP_USERNAME, pwd: process.env.MONGO_APP_PASSWORD,
                   roles: [{role: "readWrite", db: process.env.MONGO_APP_DB}]})'
